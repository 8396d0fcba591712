//! Admin changes to a key reach the edge within the filter's cache TTL.

use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_integration_tests::{
    assert_denied, assert_passed, eventually, CreatedKey, Plan, Response, Stack,
};

/// The cache TTL these tests configure, and the slack allowed on top of it.
const TTL: Duration = Duration::from_secs(2);
const SLACK: Duration = Duration::from_millis(1500);
const TTL_CONFIG: &str = "2s";

/// Polls until `want(response)`, failing if that takes longer than TTL + SLACK from `since`.
#[track_caller]
fn within_ttl(
    stack: &Stack,
    secret: &str,
    since: Instant,
    what: &str,
    want: impl Fn(&Response) -> bool,
) -> Response {
    let budget = (TTL + SLACK).saturating_sub(since.elapsed());
    let found = eventually(budget, Duration::from_millis(100), || {
        let response = stack.get_with_key("/a", secret);
        want(&response).then_some(response)
    });
    match found {
        Some(response) => response,
        None => {
            let last = stack.get_with_key("/a", secret);
            panic!(
                "{what}: not seen within ttl + {SLACK:?} ({:?} elapsed); last answer {last:?}",
                since.elapsed()
            )
        }
    }
}

/// Several fresh connections (spread over the workers) all answer as `check` expects.
fn consistently(stack: &Stack, secret: &str, check: impl Fn(&Response)) {
    for _ in 0..6 {
        check(&stack.get_with_key("/a", secret));
    }
}

#[test]
fn deactivation_denies_within_ttl_and_reactivation_restores() {
    let stack = Stack::builder().cache_ttl(TTL_CONFIG).start();
    let admin = stack.admin();
    let key = admin.new_key(Plan::Pro);
    consistently(&stack, &key.secret, |r| {
        assert_passed(r, &key);
    });

    admin.set_active(&key.id, false);
    let since = Instant::now();
    let denied = within_ttl(&stack, &key.secret, since, "deactivation", |r| {
        r.status == 401
    });
    assert_denied(&denied, 401, "Inactive API Key");
    consistently(&stack, &key.secret, |r| {
        assert_denied(r, 401, "Inactive API Key")
    });

    admin.set_active(&key.id, true);
    let since = Instant::now();
    let passed = within_ttl(&stack, &key.secret, since, "reactivation", |r| {
        r.status == 200
    });
    assert_passed(&passed, &key);
    consistently(&stack, &key.secret, |r| {
        assert_passed(r, &key);
    });
}

#[test]
fn rotation_denies_old_secret_within_ttl_and_new_secret_passes() {
    let stack = Stack::builder().cache_ttl(TTL_CONFIG).start();
    let admin = stack.admin();
    let old = admin.new_key(Plan::Pro);
    consistently(&stack, &old.secret, |r| {
        assert_passed(r, &old);
    });

    let new = admin.rotate_key(&old, None);
    let since = Instant::now();
    assert_ne!(new.secret, old.secret);
    assert_eq!(new.id, old.id, "rotation keeps the key id");
    assert_passed(&stack.get_with_key("/a", &new.secret), &new);

    let denied = within_ttl(
        &stack,
        &old.secret,
        since,
        "old secret after rotation",
        |r| r.status == 401,
    );
    assert_denied(&denied, 401, "Invalid API Key");
    consistently(&stack, &old.secret, |r| {
        assert_denied(r, 401, "Invalid API Key")
    });
    consistently(&stack, &new.secret, |r| {
        assert_passed(r, &new);
    });
}

#[test]
fn rotation_with_grace_accepts_both_secrets_until_grace_ends() {
    const GRACE: Duration = Duration::from_secs(6);
    let stack = Stack::builder().cache_ttl(TTL_CONFIG).start();
    let admin = stack.admin();
    let old = admin.new_key(Plan::Pro);
    assert_passed(&stack.get_with_key("/a", &old.secret), &old);

    let new = admin.rotate_key(&old, Some(GRACE.as_secs()));
    let rotated = Instant::now();
    let old_as_rotated = CreatedKey {
        secret: old.secret.clone(),
        ..new.clone()
    };
    consistently(&stack, &new.secret, |r| {
        assert_passed(r, &new);
    });
    consistently(&stack, &old.secret, |r| {
        assert_passed(r, &old_as_rotated);
    });

    // Past the cache TTL, still inside the grace period: the old secret is still honoured.
    std::thread::sleep((TTL + SLACK).saturating_sub(rotated.elapsed()));
    assert!(rotated.elapsed() < GRACE - Duration::from_millis(500));
    consistently(&stack, &old.secret, |r| {
        assert_passed(r, &old_as_rotated);
    });

    // After the grace period the old secret is invalid (the filter stops honouring its cached
    // copy at secret_valid_until_ms).
    std::thread::sleep(GRACE.saturating_sub(rotated.elapsed()));
    let grace_over = Instant::now();
    let denied = eventually(SLACK, Duration::from_millis(100), || {
        let r = stack.get_with_key("/a", &old.secret);
        (r.status == 401).then_some(r)
    })
    .unwrap_or_else(|| {
        panic!(
            "old secret still accepted {:?} after its grace period",
            grace_over.elapsed()
        )
    });
    assert_denied(&denied, 401, "Invalid API Key");
    consistently(&stack, &new.secret, |r| {
        assert_passed(r, &new);
    });
}

#[test]
fn delete_is_allowed_only_for_keys_never_used() {
    let stack = Stack::start();
    let admin = stack.admin();
    let workspace = admin.create_workspace("deletes", Plan::Pro);
    let unused = admin.create_key(&workspace, &json!({"alias": "never-used"}));
    let used = admin.create_key(&workspace, &json!({"alias": "used"}));

    assert_passed(&stack.get_with_key("/a", &used.secret), &used);

    let deleted = admin.delete_key(&unused.id);
    assert_eq!(deleted.status, 204, "{deleted:?}");
    let gone = admin.call("GET", &format!("/v1/keys/{}", unused.id), None);
    assert_eq!(gone.status, 404, "{gone:?}");

    let refused = admin.delete_key(&used.id);
    assert_eq!(refused.status, 409, "{refused:?}");
    assert_eq!(
        refused.error().as_deref(),
        Some("API key has request history; deactivate it instead")
    );
}

#[test]
fn free_plan_allows_two_keys() {
    let stack = Stack::builder().without_envoy().start();
    let admin = stack.admin();
    let workspace = admin.create_workspace("free-tier", Plan::Free);
    admin.create_key(&workspace, &json!({"alias": "one"}));
    admin.create_key(&workspace, &json!({"alias": "two"}));
    let third = admin.try_create_key(&workspace, &json!({"alias": "three"}));
    assert_eq!(third.status, 409, "{third:?}");
    assert!(
        third.error().is_some(),
        "409 without an error message: {third:?}"
    );
}
