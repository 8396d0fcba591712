//! IP blocking (issue 4): `max_failures` failed authentications from one client IP within
//! `window` block it for `block_for`, before any key check; other IPs are unaffected.
//!
//! The client IP comes from `x-forwarded-for` (`trusted_hops: 1`: the rightmost entry, the one
//! the nearest trusted proxy appended). The harness's connection manager leaves
//! `use_remote_address` off and appends nothing to XFF, so the header the test sends is the one
//! the filter reads.

use std::time::Duration;

use serde_json::json;
use tollgate_integration_tests::keys::unknown_key;
use tollgate_integration_tests::{assert_denied, assert_passed, CreatedKey, Plan, Stack};

const BLOCKED: &str = "IP temporarily blocked";
const MAX_FAILURES: usize = 20;
/// Workers pick up an IP another worker blocked on their next tick (250 ms).
const PROPAGATION: Duration = Duration::from_millis(600);

fn blocking_stack(block_for: &str) -> Stack {
    Stack::builder()
        .set(
            "/ip_blocking",
            json!({"enabled": true, "max_failures": MAX_FAILURES, "window": "60s",
                   "block_for": block_for}),
        )
        .set(
            "/client_ip",
            json!({"source": "x_forwarded_for", "trusted_hops": 1}),
        )
        .start()
}

fn from_ip(stack: &Stack, ip: &str, key: Option<&str>) -> tollgate_integration_tests::Response {
    // Untrusted entries on the left are the client's to invent; only the rightmost counts.
    let xff = format!("198.51.100.{}, {ip}", rand_octet());
    match key {
        Some(key) => stack.get(
            "/v1/things",
            &[("x-forwarded-for", &xff), ("x-api-key", key)],
        ),
        None => stack.get("/v1/things", &[("x-forwarded-for", &xff)]),
    }
}

fn rand_octet() -> u8 {
    (tollgate_integration_tests::time::now_ms() % 250) as u8 + 1
}

/// `n` failed authentications from `ip`, alternating missing, malformed and unknown keys.
fn fail(stack: &Stack, ip: &str, n: usize) {
    for i in 0..n {
        let response = match i % 3 {
            0 => from_ip(stack, ip, None),
            1 => from_ip(stack, ip, Some("tg_not_a_key")),
            _ => from_ip(stack, ip, Some(&unknown_key())),
        };
        assert_eq!(
            response.status,
            401,
            "failure {} of {n} from {ip} must still be a 401: {response:?}",
            i + 1
        );
    }
}

fn passes(stack: &Stack, ip: &str, key: &CreatedKey) {
    assert_passed(&from_ip(stack, ip, Some(&key.secret)), key);
}

#[test]
fn twenty_failures_block_the_ip_even_with_a_valid_key_and_the_block_ends() {
    let stack = blocking_stack("2s");
    let key = stack.admin().new_key(Plan::Enterprise);
    let (attacker, bystander) = ("203.0.113.7", "192.0.2.44");

    fail(&stack, attacker, MAX_FAILURES - 1);
    std::thread::sleep(PROPAGATION);
    passes(&stack, attacker, &key); // 19 failures: not blocked yet

    fail(&stack, attacker, 1);
    std::thread::sleep(PROPAGATION);
    let blocked_at = std::time::Instant::now();
    // Blocked on every worker (fresh connections spread over both), before any key check.
    for _ in 0..6 {
        assert_denied(&from_ip(&stack, attacker, Some(&key.secret)), 403, BLOCKED);
        assert_denied(&from_ip(&stack, attacker, None), 403, BLOCKED);
    }
    // Another IP is unaffected: passes with its key, and its own failures are plain 401s.
    passes(&stack, bystander, &key);
    assert_denied(&from_ip(&stack, bystander, None), 401, "Missing API Key");
    passes(&stack, bystander, &key);
    assert_eq!(blocked_ips(&stack), 1);
    // Metrics reach Envoy on the filter's tick.
    let denied_blocked = stack.envoy().settled_filter_stat(
        "requests.denied.ip_blocked",
        Duration::from_millis(300),
        Duration::from_secs(2),
    );
    assert_eq!(denied_blocked, 12, "tollgate.requests.denied.ip_blocked");

    // block_for = 2s: then the IP passes again.
    std::thread::sleep(Duration::from_millis(2300).saturating_sub(blocked_at.elapsed()));
    for _ in 0..4 {
        passes(&stack, attacker, &key);
    }
}

#[test]
fn failures_from_many_ips_below_the_threshold_block_nobody() {
    let stack = blocking_stack("5m");
    let key = stack.admin().new_key(Plan::Enterprise);
    let ips: Vec<String> = (1..=10).map(|i| format!("10.9.8.{i}")).collect();
    for ip in &ips {
        fail(&stack, ip, MAX_FAILURES - 1);
    }
    std::thread::sleep(PROPAGATION);
    for ip in &ips {
        passes(&stack, ip, &key);
    }
    assert_eq!(blocked_ips(&stack), 0);
}

/// `tollgate.ip.blocked` once it has settled: counters reach Envoy's stats on the filter's tick.
fn blocked_ips(stack: &Stack) -> u64 {
    stack.envoy().settled_filter_stat(
        "ip.blocked",
        Duration::from_millis(300),
        Duration::from_secs(3),
    )
}
