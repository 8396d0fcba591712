//! Over 600 lines (~900) on purpose, as one concept: the suite of one writer, the SQLite ingest
//! writer, whose fixtures and scans every test shares (split, each part would copy them).
//! Against real databases: exact reports across the roll-up, hash collisions, duplicates, the
//! request log's references and the tail, restarts, the backfill.

use super::rollup::roll_target;
use super::*;
use crate::domain::{Alias, Category, PlanName, WorkspaceName};
use crate::domain::{NewKey, NewWorkspace, Quotas, RequestFilter};
use crate::secret::ApiKeySecret;
use crate::store::{SqliteStore, Store};

#[test]
fn request_id_hash_is_stable() {
    // Stored in databases: these values must never change.
    assert_eq!(request_id_hash(""), -780_787_492_076_525_413);
    assert_eq!(
        request_id_hash("8d189948-9b1a-4e3b-9a71-a4f242816ea6"),
        -1_249_828_607_231_379_034
    );
    assert_ne!(request_id_hash("a"), request_id_hash("b"));
}

#[test]
fn status_codes_round_trip() {
    for s in UsageStatus::ALL {
        assert_eq!(status_from_code(status_code(s)), Some(s));
    }
    assert_eq!(status_from_code(0), None);
}

fn record(key: &str, ws: &str, request_id: &str, t: i64) -> UsageRecord {
    UsageRecord {
        request_id: request_id.to_owned(),
        timestamp: t,
        key_id: key.to_owned(),
        workspace_id: ws.to_owned(),
        method: "GET".to_owned(),
        endpoint: "/v1/things/{id}".to_owned(),
        resource_id: Some("r-1".to_owned()),
        response_code: 200,
        status: UsageStatus::Completed,
        duration_ms: 1.5,
        client_ip: "127.0.0.1".to_owned(),
        credits: 1,
        admitted: true,
        instance: "i_1".to_owned(),
    }
}

/// A store with workspace `ws_c`, key `key_c`, and an ingest writer on the same file.
async fn store_and_writer(path: &Path) -> (SqliteStore, Writer, i64) {
    let store = SqliteStore::open(path).await.unwrap();
    let plans = store.plans().await.unwrap();
    let now = clock::now_ms();
    store
        .create_workspace(NewWorkspace {
            id: "ws_c".into(),
            name: WorkspaceName::parse("c").unwrap(),
            plan: PlanName::parse("enterprise", &plans).unwrap(),
            created_at: now,
        })
        .await
        .unwrap();
    let secret = ApiKeySecret::generate();
    store
        .create_key(NewKey {
            id: "key_c".into(),
            workspace_id: "ws_c".into(),
            alias: Alias::parse("c").unwrap(),
            description: None,
            category: Category::parse("production").unwrap(),
            expires_at: None,
            quotas: Quotas::default(),
            allowed: vec![],
            created_at: now,
            hash: secret.hash(),
            prefix: secret.display_prefix(),
            rate_limits: Default::default(),
            credits: None,
            external_id: None,
            meta: Default::default(),
        })
        .await
        .unwrap();

    let mut writer = Writer::new(open_writer(path, Duration::from_secs(5)).unwrap(), {
        Arc::default()
    });
    writer.load_tail().unwrap();
    (store, writer, now)
}

/// Totals and series of `records` of `scope` in `[from, to)` by `interval`, counted one by
/// one: what a usage report must say.
fn expected_report(
    records: &[UsageRecord],
    from: i64,
    to: i64,
    interval: i64,
) -> (
    crate::domain::StatusTotals,
    Vec<crate::domain::SeriesBucket>,
) {
    let mut totals = crate::domain::StatusTotals::default();
    let mut series: Vec<crate::domain::SeriesBucket> = (from..to)
        .step_by(interval as usize)
        .map(|start_ms| crate::domain::SeriesBucket {
            start_ms,
            ..Default::default()
        })
        .collect();
    for r in records
        .iter()
        .filter(|r| r.timestamp >= from && r.timestamp < to)
    {
        totals.add(r.status, 1);
        // Credits spent: of admitted records only.
        if r.admitted {
            totals.credits += u64::from(r.credits);
        }
        let b = &mut series[((r.timestamp - from) / interval) as usize];
        match r.status {
            UsageStatus::Completed => b.completed += 1,
            UsageStatus::Failed => b.failed += 1,
            UsageStatus::RateLimited => b.rate_limited += 1,
        }
    }
    (totals, series)
}

/// Key and workspace reports by minute, hour and day say what the stored records say.
async fn assert_reports_exact(store: &SqliteStore, stored: &[UsageRecord], hour0: i64) {
    use crate::domain::{UsageQuery, UsageScope};
    let day0 = floor_to(hour0, DAY_MS);
    for scope in [
        UsageScope::Key("key_c".into()),
        UsageScope::Workspace("ws_c".into()),
    ] {
        for (from, to, interval) in [
            (hour0, hour0 + 3 * HOUR_MS, MINUTE_MS),
            (hour0, hour0 + 3 * HOUR_MS, HOUR_MS),
            (day0, day0 + 2 * DAY_MS, DAY_MS),
        ] {
            let query = UsageQuery {
                scope: scope.clone(),
                from_ms: from,
                to_ms: to,
                interval_ms: interval,
            };
            let report = store.usage_report(&query).await.unwrap();
            let (totals, series) = expected_report(stored, from, to, interval);
            assert_eq!(report.totals, totals, "{scope:?} by {interval} ms");
            assert_eq!(report.series, series, "{scope:?} by {interval} ms");
        }
    }
}

/// Hours and days are rolled from the minutes a minute after the minute ends (0009); a
/// report is exact before, during and after, with late records of rolled minutes, and the
/// roll-up skips minutes without rows instead of walking to them.
#[tokio::test]
async fn hour_and_day_reports_are_exact_across_the_roll_up() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
    let hour0 = floor_to(now, HOUR_MS) - 2 * HOUR_MS;
    let all: Vec<UsageRecord> = (0..1_000)
        .map(|k| {
            let mut r = record("key_c", "ws_c", &format!("r{k}"), hour0 + k * 7_300);
            (r.response_code, r.status) = match k % 10 {
                0 => (500, UsageStatus::Failed),
                1 => (429, UsageStatus::RateLimited),
                _ => (200, UsageStatus::Completed),
            };
            if k % 4 == 0 {
                r.endpoint = "/v1/other".into();
            }
            // Denied by the filter (a quota or a key rate limit): counted, spends no credits.
            if k % 10 == 1 {
                r.admitted = false;
            }
            r.credits = 1 + (k % 3) as u32;
            r
        })
        .filter(|r| r.timestamp < now)
        .collect();
    let (first, late): (Vec<UsageRecord>, Vec<UsageRecord>) = all
        .iter()
        .cloned()
        .partition(|r| r.request_id.len() % 2 == 0);
    assert!(!late.is_empty());

    writer.ingest_group(&[&first]).unwrap();
    assert_eq!(count(&writer, "SELECT count(*) FROM usage_hours"), 0);
    assert_reports_exact(&store, &first, hour0).await;

    // An empty database starts at minute 1: the first step jumps to the first minute row.
    let steps = std::iter::from_fn(|| {
        writer.roll_up_step(now).unwrap();
        Some(writer.rolled_through)
    })
    .take_while(|through| *through != Some(roll_target(now)))
    .count();
    assert!(steps <= 2 * 60 / 10 + 1, "{steps} steps");
    assert!(count(&writer, "SELECT count(*) FROM usage_hours") > 0);
    assert_eq!(
        count(&writer, "SELECT sum(count) FROM usage_days"),
        first
            .iter()
            .filter(|r| r.timestamp < roll_target(now))
            .count() as i64
    );
    assert_reports_exact(&store, &first, hour0).await;

    // Late records of rolled minutes go to the hours and days directly.
    writer.ingest_group(&[&late]).unwrap();
    assert_reports_exact(&store, &all, hour0).await;
    writer.roll_up_step(now + HOUR_MS).unwrap();
    assert_eq!(
        count(&writer, "SELECT sum(count) FROM usage_ws_hours"),
        all.len() as i64
    );
    assert_reports_exact(&store, &all, hour0).await;
    store.close().await;
}

/// Every request id gets the same hash: idempotency must still be exact, from the text.
#[tokio::test]
async fn hash_collisions_never_drop_or_duplicate_records() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
    writer.hash = |_| 42;
    let r = |id: &str| record("key_c", "ws_c", id, now - 1000);
    let first = [r("a"), r("b"), r("a"), r("c")];
    let out = writer.ingest_group(&[&first]).unwrap();
    assert_eq!((out[0].accepted, out[0].duplicates), (3, 1));
    let second = [r("c"), r("b"), r("d"), r("a"), r("d")];
    let third = [r("e"), r("b")];
    let out = writer.ingest_group(&[&second, &third]).unwrap();
    assert_eq!((out[0].accepted, out[0].duplicates), (1, 4));
    assert_eq!((out[1].accepted, out[1].duplicates), (1, 1));

    let page = store
        .requests(&RequestFilter {
            limit: 100,
            ..RequestFilter::default()
        })
        .await
        .unwrap();
    let mut ids: Vec<String> = page.records.into_iter().map(|r| r.request_id).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b", "c", "d", "e"]);

    // The same once the tail is indexed (colliding keys in usage_request_keys).
    writer.index_tail().unwrap();
    let out = writer
        .ingest_group(&[&[r("a"), r("e"), r("b"), r("f")]])
        .unwrap();
    assert_eq!((out[0].accepted, out[0].duplicates), (1, 3));
    assert_eq!(
        count(
            &writer,
            "SELECT count(*) FROM usage_request_keys WHERE rid_hash = 42"
        ),
        5
    );
    store.close().await;
}

/// A duplicate has the request id and the timestamp of a stored record (the filter's
/// re-delivery); the same request id at another time is another request. Exact with real
/// hashes and with every hash colliding.
#[tokio::test]
async fn duplicate_is_same_request_id_and_timestamp() {
    for collide in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
        if collide {
            writer.hash = |_| 7;
        }
        let r = |id: &str, t: i64| record("key_c", "ws_c", id, now - 10_000 + t);
        let out = writer
            .ingest_group(&[&[r("a", 0), r("b", 0), r("a", 1), r("a", 0)]])
            .unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (3, 1), "{collide}");
        // Re-delivered in later batches (same transaction and another one).
        let out = writer
            .ingest_group(&[&[r("a", 1), r("b", 0)], &[r("a", 0), r("b", 2)]])
            .unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (0, 2), "{collide}");
        assert_eq!((out[1].accepted, out[1].duplicates), (1, 1), "{collide}");
        let out = writer
            .ingest_group(&[&[r("a", 0), r("a", 1), r("b", 0), r("b", 2), r("c", 0)]])
            .unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (1, 4), "{collide}");

        let page = store
            .requests(&RequestFilter {
                limit: 100,
                ..RequestFilter::default()
            })
            .await
            .unwrap();
        let mut stored: Vec<(String, i64)> = page
            .records
            .into_iter()
            .map(|x| (x.request_id, x.timestamp - (now - 10_000)))
            .collect();
        stored.sort();
        let want =
            [("a", 0), ("a", 1), ("b", 0), ("b", 2), ("c", 0)].map(|(id, t)| (id.to_owned(), t));
        assert_eq!(stored, want, "{collide}");
        store.close().await;
    }
}

/// Every page of the request log for `filter`, following the cursor.
async fn all_pages(store: &SqliteStore, filter: &RequestFilter) -> Vec<(String, i64, i64)> {
    let mut filter = filter.clone();
    let mut rows = Vec::new();
    loop {
        let page = store.requests(&filter).await.unwrap();
        rows.extend(
            page.records
                .iter()
                .map(|r| (r.request_id.clone(), r.timestamp, r.id)),
        );
        match page.next_cursor {
            Some(c) => filter.cursor = Some(c),
            None => return rows,
        }
    }
}

fn count(writer: &Writer, sql: &str) -> i64 {
    writer.conn.query_row(sql, [], |row| row.get(0)).unwrap()
}

/// The `resource_id` filter reads references for the older records and scans the tail
/// above `through_id`: whatever the split, it answers what a filter over every record
/// would, in the same order, across pages.
#[tokio::test]
async fn resource_filter_is_exact_across_references_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
    let t0 = now - 100_000;
    // Timestamps interleave across batches (late records), several records share one; odd
    // batches reach later than even ones.
    let batch = |n: usize| -> Vec<UsageRecord> {
        (0..40)
            .map(|i| {
                let t = t0 + (i % 7) * 10 + if n % 2 == 1 { 35 } else { 0 };
                let mut r = record("key_c", "ws_c", &format!("b{n}-{i}"), t);
                r.resource_id = match i % 4 {
                    0 => None,
                    k => Some(format!("res-{k}")),
                };
                r.response_code = if i % 3 == 0 { 500 } else { 200 };
                r
            })
            .collect()
    };
    let filters = |resource: &str| {
        let base = RequestFilter {
            resource_id: Some(resource.to_owned()),
            limit: 3,
            ..RequestFilter::default()
        };
        vec![
            base.clone(),
            RequestFilter {
                response_code: Some(500),
                ..base.clone()
            },
            RequestFilter {
                from_ms: Some(t0 + 10),
                to_ms: Some(t0 + 50),
                key_id: Some("key_c".into()),
                ..base.clone()
            },
            RequestFilter {
                workspace_id: Some("ws_other".into()),
                ..base
            },
        ]
    };
    // What a filter over every record gives: the unfiltered log, filtered here.
    let expected = |all: &[(String, i64, i64)],
                    resources: &HashMap<i64, Option<String>>,
                    codes: &HashMap<i64, u16>,
                    f: &RequestFilter|
     -> Vec<(String, i64, i64)> {
        all.iter()
            .filter(|(_, t, id)| {
                resources[id] == f.resource_id
                    && f.response_code.is_none_or(|c| codes[id] == c)
                    && f.from_ms.is_none_or(|from| *t >= from)
                    && f.to_ms.is_none_or(|to| *t < to)
                    && f.workspace_id.as_deref().is_none_or(|w| w == "ws_c")
            })
            .cloned()
            .collect()
    };

    let mut referenced_counts = Vec::new();
    // Some batches start a little below a generation's end (0011), so their references
    // span two generations, and generations overlap in time: ids jump there (with an empty
    // tail) through `through_id`, above which the next ids are given.
    let jumps = [(0, 1 << RESOURCE_GEN_SHIFT), (3, 3 << RESOURCE_GEN_SHIFT)];
    for (n, write_refs) in [(0, true), (1, false), (2, true), (3, true), (4, false)] {
        if let Some((_, gen_start)) = jumps.iter().find(|(at, _)| *at == n) {
            writer
                .conn
                .execute(
                    "UPDATE usage_tail_state SET through_id = ?1",
                    [gen_start - 15],
                )
                .unwrap();
            writer.load_tail().unwrap();
        }
        writer.ingest_group(&[&batch(n)]).unwrap();
        if write_refs {
            assert!(writer.index_tail().unwrap() > 0);
        }
        referenced_counts.push(count(&writer, "SELECT count(*) FROM usage_resource_refs"));
        let all = all_pages(
            &store,
            &RequestFilter {
                limit: 1000,
                ..RequestFilter::default()
            },
        )
        .await;
        let page = store
            .requests(&RequestFilter {
                limit: 1000,
                ..RequestFilter::default()
            })
            .await
            .unwrap();
        let resources: HashMap<i64, Option<String>> = page
            .records
            .iter()
            .map(|r| (r.id, r.resource_id.clone()))
            .collect();
        let codes: HashMap<i64, u16> = page
            .records
            .iter()
            .map(|r| (r.id, r.response_code))
            .collect();
        for resource in ["res-1", "res-2", "res-3", "res-9"] {
            for f in filters(resource) {
                let got = all_pages(&store, &f).await;
                assert_eq!(
                    got,
                    expected(&all, &resources, &codes, &f),
                    "after batch {n}: {f:?}"
                );
            }
        }
    }
    // 30 records with a resource per batch: references after 0, after 2 (for 1 and 2) and
    // after 3; 1 was read from the tail, then 4.
    assert_eq!(referenced_counts, [30, 30, 90, 120, 120]);
    // In generations 0 and 1 (batches 0 to 2), then 2 and 3 (batch 3), with their time
    // ranges.
    let gens: Vec<(i64, i64, i64, i64)> = writer
        .conn
        .prepare(
            "SELECT g.gen, g.min_ts - ?1, g.max_ts - ?1, \
             (SELECT count(*) FROM usage_resource_refs x WHERE x.gen = g.gen) \
             FROM usage_resource_gens g ORDER BY g.gen",
        )
        .unwrap()
        .query_map([t0], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    // (gen, oldest and newest timestamp after t0, references)
    assert_eq!(
        gens,
        [
            (0, 0, 60, 10),
            (1, 0, 95, 80),
            (2, 35, 95, 10),
            (3, 35, 95, 20)
        ]
    );
    store.close().await;
}

/// Indexed records of the last [`KEYS_RETAIN_MS`] stay in memory; older ones are found in
/// `usage_request_keys`. Either way a re-delivered record is a duplicate, and one deleted
/// since (retention) is stored again.
#[tokio::test]
async fn recently_indexed_keys_stay_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
    let old = record("key_c", "ws_c", "old", now - 40 * DAY_MS);
    let recent = record("key_c", "ws_c", "recent", now - 500);
    let newest = record("key_c", "ws_c", "newest", now);
    let out = writer.ingest_group(&[&[old.clone(), recent.clone(), newest.clone()]]);
    assert_eq!(out.unwrap()[0].accepted, 3);
    assert_eq!(writer.index_tail().unwrap(), 3);
    // "old" left memory (found in usage_request_keys from now on), the others stayed.
    assert_eq!(writer.tail.len, 2);
    assert_eq!(writer.tail_len(), 0);
    assert!(writer.keyed_newest >= old.timestamp && writer.keyed_newest < recent.timestamp);
    let all = [old.clone(), recent.clone(), newest.clone()];
    let out = writer.ingest_group(&[&all]).unwrap();
    assert_eq!((out[0].accepted, out[0].duplicates), (0, 3));
    // Deleted by retention: stored again, from memory's point of view too.
    while store.purge_records(now - 30 * DAY_MS, 10).await.unwrap() > 0 {}
    while store.purge_records(now + 1, 10).await.unwrap() > 0 {}
    let out = writer.ingest_group(&[&all]).unwrap();
    assert_eq!((out[0].accepted, out[0].duplicates), (3, 0));
    let out = writer.ingest_group(&[&all]).unwrap();
    assert_eq!((out[0].accepted, out[0].duplicates), (0, 3));
    store.close().await;
}

/// The `key_id` and `workspace_id` filters read their references (0008) for the older
/// records and scan the tail above `through_id`: whatever the split, they answer what a
/// filter over every record would, in the same order, across pages.
#[tokio::test]
async fn scope_filters_are_exact_across_references_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
    let plans = store.plans().await.unwrap();
    store
        .create_workspace(NewWorkspace {
            id: "ws_d".into(),
            name: WorkspaceName::parse("d").unwrap(),
            plan: PlanName::parse("enterprise", &plans).unwrap(),
            created_at: now,
        })
        .await
        .unwrap();
    for (id, ws) in [("key_c2", "ws_c"), ("key_d", "ws_d")] {
        let secret = ApiKeySecret::generate();
        store
            .create_key(NewKey {
                id: id.into(),
                workspace_id: ws.into(),
                alias: Alias::parse(id).unwrap(),
                description: None,
                category: Category::parse("production").unwrap(),
                expires_at: None,
                quotas: Quotas::default(),
                allowed: vec![],
                created_at: now,
                hash: secret.hash(),
                prefix: secret.display_prefix(),
                rate_limits: Default::default(),
                credits: None,
                external_id: None,
                meta: Default::default(),
            })
            .await
            .unwrap();
    }
    let t0 = now - 100_000;
    let keys = [("key_c", "ws_c"), ("key_c2", "ws_c"), ("key_d", "ws_d")];
    // Timestamps interleave across batches (late records), several records share one.
    let batch = |n: usize| -> Vec<UsageRecord> {
        (0..42)
            .map(|i| {
                let (k, w) = keys[i % 3];
                let t = t0 + ((i * 5 + n * 3) % 11) as i64 * 10;
                let mut r = record(k, w, &format!("b{n}-{i}"), t);
                r.response_code = if i % 4 == 0 { 500 } else { 200 };
                r
            })
            .collect()
    };
    let filters = || {
        let mut all = Vec::new();
        for key in [
            None,
            Some("key_c"),
            Some("key_c2"),
            Some("key_d"),
            Some("key_x"),
        ] {
            for ws in [None, Some("ws_c"), Some("ws_d"), Some("ws_x")] {
                let base = RequestFilter {
                    key_id: key.map(str::to_owned),
                    workspace_id: ws.map(str::to_owned),
                    limit: 4,
                    ..RequestFilter::default()
                };
                all.push(base.clone());
                all.push(RequestFilter {
                    response_code: Some(500),
                    from_ms: Some(t0 + 20),
                    to_ms: Some(t0 + 80),
                    ..base
                });
            }
        }
        all
    };
    let expected = |all: &[(String, i64, i64)],
                    rows: &HashMap<i64, (String, String, u16)>,
                    f: &RequestFilter|
     -> Vec<(String, i64, i64)> {
        all.iter()
            .filter(|(_, t, id)| {
                let (k, w, code) = &rows[id];
                f.key_id.as_ref().is_none_or(|x| x == k)
                    && f.workspace_id.as_ref().is_none_or(|x| x == w)
                    && f.response_code.is_none_or(|c| *code == c)
                    && f.from_ms.is_none_or(|from| *t >= from)
                    && f.to_ms.is_none_or(|to| *t < to)
            })
            .cloned()
            .collect()
    };

    let mut referenced_counts = Vec::new();
    for (n, write_refs) in [(0, true), (1, false), (2, true), (3, false)] {
        writer.ingest_group(&[&batch(n)]).unwrap();
        if write_refs {
            assert!(writer.index_tail().unwrap() > 0);
        }
        referenced_counts.push((
            count(&writer, "SELECT count(*) FROM usage_key_refs"),
            count(&writer, "SELECT count(*) FROM usage_workspace_refs"),
        ));
        let unfiltered = RequestFilter {
            limit: 1000,
            ..RequestFilter::default()
        };
        let all = all_pages(&store, &unfiltered).await;
        // The unscoped log (idempotency keys, tail) against every stored record.
        let stored: Vec<(String, i64, i64)> = writer
            .conn
            .prepare(
                "SELECT request_id, timestamp, id FROM usage_records \
                 ORDER BY timestamp DESC, id DESC",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(all, stored, "after batch {n}");
        let rows: HashMap<i64, (String, String, u16)> = store
            .requests(&unfiltered)
            .await
            .unwrap()
            .records
            .into_iter()
            .map(|r| (r.id, (r.key_id, r.workspace_id, r.response_code)))
            .collect();
        for f in filters() {
            let got = all_pages(&store, &f).await;
            assert_eq!(got, expected(&all, &rows, &f), "after batch {n}: {f:?}");
        }
    }
    assert_eq!(
        referenced_counts,
        [(42, 42), (42, 42), (126, 126), (126, 126)]
    );

    // Retention deletes the references with the records.
    while store.purge_records(now, 50).await.unwrap() > 0 {}
    assert_eq!(count(&writer, "SELECT count(*) FROM usage_key_refs"), 0);
    assert_eq!(
        count(&writer, "SELECT count(*) FROM usage_workspace_refs"),
        0
    );
    store.close().await;
}

/// Deleting records (retention) deletes their references; new records get ids above the
/// referenced range even when the newest records were deleted, so none is ever missed.
#[tokio::test]
async fn references_follow_deletes_and_ids_stay_above_them() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
    let old = now - 40 * DAY_MS;
    let rs: Vec<UsageRecord> = (0..10)
        .map(|i| record("key_c", "ws_c", &format!("old-{i}"), old + i))
        .collect();
    writer.ingest_group(&[&rs]).unwrap();
    assert_eq!(writer.index_tail().unwrap(), 10);
    assert_eq!(store.purge_records(now - 30 * DAY_MS, 4).await.unwrap(), 4);
    assert_eq!(
        count(&writer, "SELECT count(*) FROM usage_resource_refs"),
        6
    );
    while store.purge_records(now - 30 * DAY_MS, 4).await.unwrap() > 0 {}
    assert_eq!(count(&writer, "SELECT count(*) FROM usage_records"), 0);
    assert_eq!(
        count(&writer, "SELECT count(*) FROM usage_resource_refs"),
        0
    );
    // Their generation (0011) goes with them.
    assert_eq!(
        count(&writer, "SELECT count(*) FROM usage_resource_gens"),
        0
    );

    // A deleted record is not stored any more: delivered again, it is stored again, whether
    // it was indexed or still in the tail.
    writer.ingest_group(&[&rs[..1]]).unwrap();
    assert_eq!(store.purge_records(now - 30 * DAY_MS, 4).await.unwrap(), 1);
    let out = writer.ingest_group(&[&rs[..2]]).unwrap();
    assert_eq!((out[0].accepted, out[0].duplicates), (2, 0));
    while store.purge_records(now - 30 * DAY_MS, 4).await.unwrap() > 0 {}
    assert_eq!(count(&writer, "SELECT count(*) FROM usage_request_keys"), 0);

    // Every record is gone, the newest included: the next ids still start above the
    // indexed ones (10; 11-13 were never indexed and are free again).
    writer
        .ingest_group(&[&[record("key_c", "ws_c", "new", now)]])
        .unwrap();
    assert_eq!(count(&writer, "SELECT min(id) FROM usage_records"), 11);
    // old-0 had id 11 in the tail: delivered again, it is no duplicate of "new".
    let out = writer.ingest_group(&[&rs[..1]]).unwrap();
    assert_eq!((out[0].accepted, out[0].duplicates), (1, 0));
    let out = writer.ingest_group(&[&rs[..1]]).unwrap();
    assert_eq!((out[0].accepted, out[0].duplicates), (0, 1));
    let found = store
        .requests(&RequestFilter {
            resource_id: Some("r-1".into()),
            limit: 10,
            ..RequestFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(found.records.len(), 2);
    store.close().await;
}

/// A new writer (a restart) picks up where the references stand and writes the rest.
#[tokio::test]
async fn references_resume_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let (store, mut writer, now) = store_and_writer(&path).await;
    let rs: Vec<UsageRecord> = (0..5)
        .map(|i| record("key_c", "ws_c", &format!("a-{i}"), now - 1000 + i))
        .collect();
    writer.ingest_group(&[&rs]).unwrap();
    drop(writer);
    let mut writer = Writer::new(
        open_writer(&path, Duration::from_secs(5)).unwrap(),
        Arc::default(),
    );
    writer.load_tail().unwrap();
    assert!(writer.tail_due(5) && !writer.tail_due(6));
    assert_eq!(writer.index_tail().unwrap(), 5);
    assert_eq!(writer.index_tail().unwrap(), 0);
    assert!(!writer.tail_due(1));
    // Duplicates are still found, referenced or not.
    let out = writer.ingest_group(&[&rs[..2]]).unwrap();
    assert_eq!((out[0].accepted, out[0].duplicates), (0, 2));
    store.close().await;
}

/// Batches long enough for multi-row inserts, with duplicates inside a chunk, across chunks,
/// batches and transactions, of the tail in memory, of indexed records and after a restart,
/// and hashes that collide (all, some, none): every (request_id, timestamp) is stored once,
/// counted as accepted the first time only.
#[tokio::test]
async fn chunked_inserts_are_exactly_once() {
    let hashes: [fn(&str) -> i64; 3] = [request_id_hash, |_| 42, |id| (id.len() % 3) as i64];
    for (h, hash) in hashes.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
        writer.hash = hash;
        let mut seen = std::collections::HashSet::new();
        let mut x: u64 = 7;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for group in 0..5 {
            let batches: Vec<Vec<UsageRecord>> = (0..3)
                .map(|_| {
                    (0..(40 + next() % 90))
                        .map(|_| {
                            let id = format!("r{}", next() % 150);
                            record("key_c", "ws_c", &id, now - 1000 + (next() % 3) as i64)
                        })
                        .collect()
                })
                .collect();
            let want: Vec<(u64, u64)> = batches
                .iter()
                .map(|b| {
                    let fresh = b
                        .iter()
                        .filter(|r| seen.insert((r.request_id.clone(), r.timestamp)))
                        .count() as u64;
                    (fresh, b.len() as u64 - fresh)
                })
                .collect();
            let refs: Vec<&[UsageRecord]> = batches.iter().map(Vec::as_slice).collect();
            // Duplicates of the tail (memory), of indexed records, and after a restart.
            match group {
                2 => {
                    writer.index_tail().unwrap();
                }
                3 => {
                    writer = Writer::new(
                        open_writer(&dir.path().join("t.db"), Duration::from_secs(5)).unwrap(),
                        Arc::default(),
                    );
                    writer.hash = hash;
                    writer.load_tail().unwrap();
                }
                _ => {}
            }
            let got: Vec<(u64, u64)> = writer
                .ingest_group(&refs)
                .unwrap()
                .iter()
                .map(|o| (o.accepted, o.duplicates))
                .collect();
            assert_eq!(got, want, "hash {h}, group {group}");
        }
        let mut stored: Vec<(String, i64)> = all_pages(
            &store,
            &RequestFilter {
                limit: 500,
                ..RequestFilter::default()
            },
        )
        .await
        .into_iter()
        .map(|(id, t, _)| (id, t))
        .collect();
        stored.sort();
        let mut want: Vec<(String, i64)> = seen.into_iter().collect();
        want.sort();
        assert_eq!(stored, want, "hash {h}");
        store.close().await;
    }
}

/// Rows migrated by 0004 have no hash: found by their text until the backfill gives them
/// their hash and key, then through the keys, whether indexing had passed them or not.
#[tokio::test]
async fn rows_without_a_hash_stay_exact_through_the_backfill() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
    let r = |id: &str| record("key_c", "ws_c", id, now - 1000);
    writer.ingest_group(&[&[r("a"), r("b")]]).unwrap();
    writer.index_tail().unwrap();
    writer.ingest_group(&[&[r("c")]]).unwrap();
    // As 0004 left them: no hash, no key (a and b indexed already, c in the tail).
    writer
        .conn
        .execute_batch("DELETE FROM usage_request_keys; UPDATE usage_records SET rid_hash = NULL;")
        .unwrap();
    writer.load_tail().unwrap();
    writer.tail = TailKeys::default();
    let again = || [r("a"), r("b"), r("c"), r("d")];
    let out = writer.ingest_group(&[&again()]).unwrap();
    assert_eq!((out[0].accepted, out[0].duplicates), (1, 3));
    writer.backfill_hashes().unwrap();
    assert_eq!(count(&writer, "SELECT count(*) FROM usage_request_keys"), 2);
    writer.index_tail().unwrap();
    assert_eq!(count(&writer, "SELECT count(*) FROM usage_request_keys"), 4);
    assert_eq!(
        count(
            &writer,
            "SELECT count(*) FROM usage_records WHERE rid_hash IS NULL"
        ),
        0
    );
    let out = writer.ingest_group(&[&again()]).unwrap();
    assert_eq!((out[0].accepted, out[0].duplicates), (0, 4));
    store.close().await;
}

/// Ingest waits for the tail in memory (loaded on demand) and fails while it cannot be.
#[tokio::test]
async fn ingest_needs_the_tail_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let (store, mut writer, now) = store_and_writer(&path).await;
    let rs = [record("key_c", "ws_c", "a", now)];
    writer.ingest_group(&[&rs]).unwrap();
    let mut restarted = Writer::new(open_writer(&path, Duration::from_secs(5)).unwrap(), {
        Arc::default()
    });
    assert!(!restarted.tail_loaded);
    let out = restarted.store_group(&[&rs]).unwrap();
    assert_eq!((out[0].accepted, out[0].duplicates), (0, 1));
    restarted
        .conn
        .execute_batch("DROP TABLE usage_tail_state")
        .unwrap();
    restarted.tail_loaded = false;
    assert!(restarted.store_group(&[&rs]).is_err());
    store.close().await;
}
