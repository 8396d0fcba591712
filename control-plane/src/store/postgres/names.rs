//! Numbers of the method, endpoint and instance names raw records carry (`usage_names`), and
//! which days have a partition of `usage_records`: both only ever grow in the database (until
//! retention drops a day), so each control plane remembers what it has seen, within a bound.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use sqlx::PgPool;

use crate::store::StoreResult;

/// Names remembered (methods, endpoints and instances are few: a route table's worth).
const NAMES_CACHED_MAX: usize = 100_000;
/// Days remembered as having a partition.
const DAYS_CACHED_MAX: usize = 10_000;

#[derive(Debug, Default)]
pub(super) struct Known {
    names: Mutex<HashMap<String, i32>>,
    days: Mutex<HashSet<i64>>,
}

impl Known {
    /// The number of every name in `names`, registering those the database does not have yet
    /// (in their own transaction: a name registered by a batch that then fails is harmless).
    pub(super) async fn name_ids(
        &self,
        pool: &PgPool,
        names: &[&str],
    ) -> StoreResult<HashMap<String, i32>> {
        let mut found = HashMap::with_capacity(names.len());
        let mut missing: Vec<&str> = Vec::new();
        if let Ok(cache) = self.names.lock() {
            for name in names {
                match cache.get(*name) {
                    Some(id) => {
                        found.insert((*name).to_owned(), *id);
                    }
                    None => missing.push(name),
                }
            }
        } else {
            missing.extend_from_slice(names);
        }
        if missing.is_empty() {
            return Ok(found);
        }
        missing.sort_unstable();
        missing.dedup();
        // Sorted, so two control planes registering the same new names never deadlock.
        sqlx::query(
            "INSERT INTO usage_names (name) SELECT * FROM unnest($1::text[]) ORDER BY 1 \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&missing)
        .execute(pool)
        .await?;
        let rows: Vec<(String, i32)> =
            sqlx::query_as("SELECT name, id FROM usage_names WHERE name = ANY($1)")
                .bind(&missing)
                .fetch_all(pool)
                .await?;
        if let Ok(mut cache) = self.names.lock() {
            if cache.len() + rows.len() > NAMES_CACHED_MAX {
                cache.clear();
            }
            cache.extend(rows.iter().cloned());
        }
        found.extend(rows);
        Ok(found)
    }

    /// Makes sure each UTC day in `days` (midnights, Unix ms) has its partition.
    pub(super) async fn ensure_partitions(&self, pool: &PgPool, days: &[i64]) -> StoreResult<()> {
        let missing: Vec<i64> = match self.days.lock() {
            Ok(known) => days
                .iter()
                .copied()
                .filter(|d| !known.contains(d))
                .collect(),
            Err(_) => days.to_vec(),
        };
        for day in missing {
            sqlx::query("SELECT tollgate_usage_partition($1)")
                .bind(day)
                .execute(pool)
                .await?;
            if let Ok(mut known) = self.days.lock() {
                if known.len() >= DAYS_CACHED_MAX {
                    known.clear();
                }
                known.insert(day);
            }
        }
        Ok(())
    }

    /// Forgets the days with a partition (another control plane's retention may have dropped
    /// some).
    pub(super) fn forget_partitions(&self) {
        if let Ok(mut known) = self.days.lock() {
            known.clear();
        }
    }
}
