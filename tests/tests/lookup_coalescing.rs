//! A burst of requests with one new key costs at most one lookup per Envoy worker; clients that
//! give up while their key is being looked up leave nothing stuck behind.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use tollgate_integration_tests::{assert_passed, Plan, Stack};

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

/// Sends a request with `key` on a connection of its own and returns the connection (the
/// request is then paused in the filter, waiting for its key's lookup).
fn start_request(stack: &Stack, key: &str) -> TcpStream {
    let mut conn = TcpStream::connect(("127.0.0.1", stack.envoy().listen_port)).unwrap();
    write!(
        conn,
        "GET /a HTTP/1.1\r\nhost: localhost\r\nx-api-key: {key}\r\n\r\n"
    )
    .unwrap();
    conn
}

/// The client that started a key's lookup leaves before the answer while another request for
/// the key waits: the waiting request is answered (the root dispatches again), the abandoned
/// lookup's answer arriving later harms nothing, and the key then passes as usual.
#[test]
fn clients_leaving_during_a_lookup_leave_nothing_stuck() {
    let stack = Stack::builder().concurrency(1).start();
    let key = stack.admin().new_key(Plan::Pro);
    let other = stack.admin().new_key(Plan::Pro);

    stack.pause_control_plane();
    let first = start_request(&stack, &key.secret);
    std::thread::sleep(Duration::from_millis(200));
    let mut second = start_request(&stack, &key.secret);
    std::thread::sleep(Duration::from_millis(200));
    drop(first); // the lookup's owner is gone; its callout is still on its way
    let lone = start_request(&stack, &other.secret);
    std::thread::sleep(Duration::from_millis(200));
    drop(lone); // nobody waits for this one at all
    std::thread::sleep(Duration::from_millis(300));
    stack.resume_control_plane();

    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match second.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the waiting request got no answer: {e}"),
        }
    }
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 200"), "waiting request: {head}");

    // Both keys work afterwards, and the filter is alive (a panic would fail every request:
    // it kills the wasm VM, or is caught at the native module's boundary and denies).
    assert_passed(&stack.get_with_key("/a", &key.secret), &key);
    assert_passed(&stack.get_with_key("/a", &other.secret), &other);
}
