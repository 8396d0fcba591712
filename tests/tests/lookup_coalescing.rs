//! A burst of requests with one new key costs at most one lookup per Envoy worker.

use std::sync::{Arc, Barrier};

use tollgate_integration_tests::{Plan, Stack};

const REQUESTS: usize = 200;
const WORKERS: u32 = 2;

#[test]
fn concurrent_requests_with_a_new_key_share_one_lookup_per_worker() {
    let stack = Stack::builder()
        .concurrency(WORKERS)
        .without_usage()
        .start();
    // Enterprise: no plan rate limit, so all 200 may pass (pro allows 50 requests per second).
    let key = stack.admin().new_key(Plan::Enterprise);
    let before = stack.envoy().control_plane_requests();

    let url = stack.envoy().url("/burst");
    let barrier = Arc::new(Barrier::new(REQUESTS));
    let threads: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let (url, secret, barrier) = (url.clone(), key.secret.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                tollgate_integration_tests::http::request(
                    "GET",
                    &url,
                    &[("x-api-key", &secret)],
                    None,
                )
            })
        })
        .collect();
    let responses: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("request thread"))
        .collect();

    let failed: Vec<_> = responses.iter().filter(|r| r.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {REQUESTS} requests did not pass, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    for response in &responses {
        assert_eq!(
            response.echo().header("x-tollgate-key-id"),
            Some(key.id.as_str())
        );
    }
    let lookups = stack.envoy().control_plane_requests() - before;
    assert!(
        lookups <= u64::from(WORKERS),
        "{lookups} control-plane requests for {REQUESTS} concurrent requests with one key \
         (at most one per worker expected)"
    );
    assert!(lookups >= 1, "the key was never looked up");
}
