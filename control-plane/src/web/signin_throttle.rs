//! Throttles the dashboard's sign-in by client IP: after [`MAX_FAILURES`] wrong tokens within
//! [`WINDOW_MS`] from one IP, that IP's sign-ins are refused (429 with `Retry-After`) until the
//! oldest of those failures is a window old, whatever token they carry, so guessing tokens costs
//! a minute per 5 guesses. A success clears the IP's failures. An IPv6 client counts by its /64
//! (one host usually holds a whole /64 and could otherwise take a new address per guess); an
//! IPv4 address mapped into IPv6 counts as the IPv4 one.
//!
//! Bounded: at most [`MAX_IPS`] IPs are tracked; a new one past that evicts the IP whose latest
//! failure is the oldest (a flood from many addresses can thus make the table forget one; each
//! of them is still held to 5 guesses a minute while it is tracked). Time is the caller's
//! `now_ms` (`crate::clock`), so the tests set it.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};

pub const MAX_FAILURES: usize = 5;
pub const WINDOW_MS: i64 = 60_000;
pub const MAX_IPS: usize = 10_000;

/// An IP's latest failures, oldest first (at most [`MAX_FAILURES`], all within the window).
#[derive(Debug, Default)]
struct Failures {
    at: Vec<i64>,
}

impl Failures {
    fn latest(&self) -> i64 {
        self.at.last().copied().unwrap_or(i64::MIN)
    }

    fn forget_before(&mut self, cutoff: i64) {
        self.at.retain(|&t| t > cutoff);
    }
}

#[derive(Debug, Default)]
struct Table {
    by_ip: HashMap<IpAddr, Failures>,
    /// `(latest failure, ip)` of every entry of `by_ip`: the eviction order.
    by_latest: BTreeSet<(i64, IpAddr)>,
}

impl Table {
    fn remove(&mut self, ip: IpAddr) {
        if let Some(f) = self.by_ip.remove(&ip) {
            self.by_latest.remove(&(f.latest(), ip));
        }
    }
}

#[derive(Debug)]
pub struct SignInThrottle {
    table: Mutex<Table>,
    max_ips: usize,
}

impl Default for SignInThrottle {
    fn default() -> Self {
        Self::with_capacity(MAX_IPS)
    }
}

impl SignInThrottle {
    /// A throttle that tracks at most `max_ips` IPs.
    pub fn with_capacity(max_ips: usize) -> Self {
        Self {
            table: Mutex::new(Table::default()),
            max_ips: max_ips.max(1),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every update leaves the table consistent, so a panic elsewhere cannot corrupt it.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Err(seconds)`: `ip` may not try to sign in for that long (the `Retry-After`, at least 1).
    pub fn check(&self, ip: IpAddr, now_ms: i64) -> Result<(), u64> {
        let ip = client(ip);
        let table = self.table();
        let Some(failures) = table.by_ip.get(&ip) else {
            return Ok(());
        };
        let recent: Vec<i64> = failures
            .at
            .iter()
            .copied()
            .filter(|&t| t > now_ms - WINDOW_MS)
            .collect();
        match recent.first() {
            Some(&oldest) if recent.len() >= MAX_FAILURES => {
                let wait_ms = oldest + WINDOW_MS - now_ms;
                Err(u64::try_from(wait_ms).unwrap_or(0).div_ceil(1000).max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a wrong token from `ip`.
    pub fn failed(&self, ip: IpAddr, now_ms: i64) {
        let ip = client(ip);
        let mut table = self.table();
        let mut failures = match table.by_ip.remove(&ip) {
            Some(f) => {
                table.by_latest.remove(&(f.latest(), ip));
                f
            }
            None => {
                while table.by_ip.len() >= self.max_ips {
                    let Some((_, oldest)) = table.by_latest.pop_first() else {
                        break;
                    };
                    table.by_ip.remove(&oldest);
                }
                Failures::default()
            }
        };
        failures.forget_before(now_ms - WINDOW_MS);
        failures.at.push(now_ms);
        if failures.at.len() > MAX_FAILURES {
            failures.at.remove(0);
        }
        table.by_latest.insert((failures.latest(), ip));
        table.by_ip.insert(ip, failures);
    }

    /// A good token from `ip`: its failures are forgotten.
    pub fn succeeded(&self, ip: IpAddr) {
        self.table().remove(client(ip));
    }

    /// How many IPs are tracked.
    pub fn tracked(&self) -> usize {
        self.table().by_ip.len()
    }
}

/// The key an address is counted under: IPv4 as is (also when mapped into IPv6), IPv6 by its
/// /64.
fn client(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn five_failures_in_a_minute_block_until_the_first_is_a_minute_old() {
        let t = SignInThrottle::default();
        let a = ip(1);
        for i in 0..4 {
            t.failed(a, 1_000 + i * 1_000);
            assert_eq!(t.check(a, 1_000 + i * 1_000), Ok(()), "after {}", i + 1);
        }
        t.failed(a, 5_000);
        // The first failure (1 s) leaves the window at 61 s.
        assert_eq!(t.check(a, 5_000), Err(56));
        assert_eq!(t.check(a, 60_500), Err(1));
        assert_eq!(t.check(a, 61_000), Ok(()));
        // Another IP is not affected.
        assert_eq!(t.check(ip(2), 5_000), Ok(()));
    }

    #[test]
    fn failures_spread_over_more_than_a_minute_do_not_block() {
        let t = SignInThrottle::default();
        let a = ip(1);
        for i in 0..20 {
            t.failed(a, i * 15_000);
            assert_eq!(t.check(a, i * 15_000), Ok(()), "{i}");
        }
    }

    #[test]
    fn a_blocked_ip_stays_blocked_while_it_keeps_failing_within_the_window() {
        let t = SignInThrottle::default();
        let a = ip(1);
        for i in 0..5 {
            t.failed(a, i * 10_000);
        }
        assert_eq!(t.check(a, 40_000), Err(20));
        // At 60 s the first failure leaves; a sixth then blocks again until 70 s.
        assert_eq!(t.check(a, 60_000), Ok(()));
        t.failed(a, 60_000);
        assert_eq!(t.check(a, 60_000), Err(10));
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_as_itself() {
        let t = SignInThrottle::default();
        for n in 0..5u16 {
            t.failed(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, n, 0, 0, n)),
                0,
            );
        }
        let same_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0xffff, 1, 2, 3));
        assert!(t.check(same_64, 1).is_err());
        let next_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert_eq!(t.check(next_64, 1), Ok(()));
        for _ in 0..5 {
            t.failed(ip(0x7f00_0001), 0);
        }
        let mapped = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x7f00, 1));
        assert!(t.check(mapped, 1).is_err());
    }

    #[test]
    fn a_success_clears_the_ip() {
        let t = SignInThrottle::default();
        let a = ip(1);
        for i in 0..4 {
            t.failed(a, i);
        }
        t.succeeded(a);
        assert_eq!(t.tracked(), 0);
        t.failed(a, 10);
        assert_eq!(t.check(a, 10), Ok(()));
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_oldest() {
        let t = SignInThrottle::with_capacity(3);
        for n in 1..=3 {
            for _ in 0..MAX_FAILURES {
                t.failed(ip(n), i64::from(n));
            }
        }
        // ip 1 failed again last: ip 2 is now the one whose latest failure is oldest.
        t.failed(ip(1), 10);
        t.failed(ip(4), 11);
        assert_eq!(t.tracked(), 3);
        assert_eq!(t.check(ip(2), 12), Ok(()), "evicted");
        assert!(t.check(ip(1), 12).is_err());
        assert!(t.check(ip(3), 12).is_err());
        // The default bound.
        let t = SignInThrottle::default();
        for n in 0..(MAX_IPS as u32 + 50) {
            t.failed(ip(n), i64::from(n));
        }
        assert_eq!(t.tracked(), MAX_IPS);
        assert_eq!(t.check(ip(0), 0), Ok(()));
    }
}
