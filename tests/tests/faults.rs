//! Faults between the edge and the control plane, with the real Envoy and the real control
//! plane: a 60 s outage and a crash in the middle of ingest under ~1,000 requests a second
//! (nothing lost, nothing twice); a control plane that hangs or answers garbage (cached keys
//! keep passing, never-seen keys get the failure mode within the timeout, each case counted);
//! the database's disk full (a file-size limit on the control plane: ingest fails, the filter
//! sends again, and once there is room every record is stored once); an Envoy restarted while
//! records wait in its memory (exactly those are lost, and counted).
//!
//! (The outage test is named to sort first: libtest starts a binary's tests in name order, two
//! at a time, so the longest starts at once and the others run beside it.)

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tollgate_integration_tests::load::{self, Outcome};
use tollgate_integration_tests::{
    assert_passed, eventually, CreatedKey, Plan, Stack, StackBuilder,
};

fn usage_stack() -> StackBuilder {
    Stack::builder()
        .set("/usage/flush_interval", "500ms")
        .set("/usage/max_backoff", "2s")
}

/// Requests with `key` until both workers have it cached (fresh connections land on either).
fn warm(stack: &Stack, key: &CreatedKey) {
    for _ in 0..10 {
        assert_passed(&stack.get_with_key("/v1/warm", &key.secret), key);
    }
}

/// A stack with a key whose 10 warm-up requests are stored (the records flow).
fn stack_with_a_recorded_key() -> (Stack, CreatedKey) {
    let stack = usage_stack().start();
    let key = stack.admin().new_key(Plan::Enterprise);
    warm(&stack, &key);
    let warmed =
        stack
            .admin()
            .settled_requests(&[("key_id", key.id.clone())], 10, Duration::from_secs(30));
    assert_eq!(warmed.len(), 10);
    (stack, key)
}

/// The request id Envoy gave request `o` (the demo upstream echoes it).
fn request_id(o: &Outcome) -> String {
    let response = o.response();
    assert_eq!(response.status, 200, "{o:?}");
    let echo = response.echo();
    echo.header("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id reached the upstream: {echo:?}"))
        .to_string()
}

/// Every stored record of `keys` by request id, once the count has settled at `expected` or
/// more (or `timeout` passed).
fn stored_ids(
    stack: &Stack,
    keys: &[CreatedKey],
    expected: &HashMap<String, usize>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for key in keys {
        let records = stack.admin().settled_requests(
            &[("key_id", key.id.clone())],
            expected[&key.id],
            Duration::from_secs(90),
        );
        ids.extend(
            records
                .iter()
                .map(|r| r["request_id"].as_str().unwrap_or_default().to_string()),
        );
    }
    ids
}

/// Control plane killed (SIGKILL) for 60 s while 4 keys send 1,000 requests a second, then
/// killed again while it ingests the backlog: every record arrives, none twice.
#[test]
fn a_60_s_outage_and_a_crash_mid_ingest_lose_no_record_and_store_none_twice() {
    const RATE: f64 = 1_000.0;
    const BEFORE: Duration = Duration::from_secs(3);
    const OUTAGE: Duration = Duration::from_secs(60);
    const AFTER: Duration = Duration::from_secs(6);
    let mut stack = usage_stack().start();
    let keys: Vec<CreatedKey> = (0..4)
        .map(|_| stack.admin().new_key(Plan::Enterprise))
        .collect();
    for key in &keys {
        warm(&stack, key);
    }
    let total = ((BEFORE + OUTAGE + AFTER).as_secs_f64() * RATE) as usize;
    let url = stack.envoy().url("/v1/candidates/c-1");
    let start = SystemTime::now() + Duration::from_millis(100);
    let mut delivered_before_crash = 0;
    let mut buffered_at_crash = 0;

    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let (keys, url) = (&keys, &url);
        let traffic = scope.spawn(move || {
            load::paced(8, total, RATE, start, |client, i| {
                let key = &keys[i % keys.len()];
                client.try_request("GET", url, &[("x-api-key", &key.secret)])
            })
        });
        std::thread::sleep(BEFORE);
        stack.kill_control_plane();
        std::thread::sleep(OUTAGE);
        let delivered = stack.envoy().filter_stat("usage.delivered");
        stack.start_control_plane();
        // The backlog goes out in batches of 500: crash once some of it is in and more is
        // still buffered.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let envoy = stack.envoy();
            let now = envoy.filter_stat("usage.delivered");
            let buffered = envoy.filter_stat("usage.buffered");
            if now >= delivered + 1_000 && buffered > 1_000 {
                delivered_before_crash = now - delivered;
                buffered_at_crash = buffered;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the backlog never started to flow ({now} delivered, {buffered} buffered)"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        stack.kill_control_plane();
        std::thread::sleep(Duration::from_secs(2));
        stack.start_control_plane();
        traffic.join().expect("traffic thread")
    });
    eprintln!(
        "crash mid-ingest: {delivered_before_crash} records of the backlog stored, \
         {buffered_at_crash} still buffered"
    );

    let mut expected: HashMap<String, usize> = keys.iter().map(|k| (k.id.clone(), 10)).collect();
    let mut sent = HashSet::new();
    for o in &outcomes {
        assert!(sent.insert(request_id(o)), "Envoy's request ids are unique");
        *expected
            .entry(keys[o.index % keys.len()].id.clone())
            .or_default() += 1;
    }
    let stored = stored_ids(&stack, &keys, &expected);
    let stored_set: HashSet<&String> = stored.iter().collect();
    let twice = stored.len() - stored_set.len();
    let lost: Vec<&String> = sent.iter().filter(|id| !stored_set.contains(id)).collect();
    eprintln!(
        "{total} requests at {RATE}/s over {} keys: {} records stored, {} lost, {twice} twice",
        keys.len(),
        stored.len(),
        lost.len()
    );
    assert_eq!(twice, 0, "records stored twice");
    assert!(
        lost.is_empty(),
        "{} records never arrived, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    assert_eq!(
        stored.len(),
        total + 10 * keys.len(),
        "the warm-ups and every request"
    );
    let envoy = stack.envoy();
    assert!(envoy.filter_stat("usage.delivery_failed") > 0);
    assert_eq!(envoy.filter_stat("usage.dropped"), 0);
}

/// What a fake control plane answers every request with.
#[derive(Clone, Copy, Debug)]
enum Garbage {
    InvalidJson,
    WrongShape,
    TenMegabytes,
}

/// A fake control plane on `port` answering everything with `garbage` until dropped.
struct FakeControlPlane {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeControlPlane {
    fn start(port: u16, garbage: Garbage) -> FakeControlPlane {
        let listener =
            TcpListener::bind(("127.0.0.1", port)).expect("bind the control plane's port");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        std::thread::spawn(move || answer(stream, garbage));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeControlPlane {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeControlPlane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request from `stream` and answers it with `garbage`, then closes.
fn answer(stream: TcpStream, garbage: Garbage) {
    let _ = stream.set_nonblocking(false);
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let payload: Vec<u8> = match garbage {
        Garbage::InvalidJson => b"{\"key_id\": \"key_x\", \"active\": tru".to_vec(),
        Garbage::WrongShape => br#"{"hello":"world","active":"maybe"}"#.to_vec(),
        Garbage::TenMegabytes => {
            let mut big = b"{\"key_id\":\"".to_vec();
            big.resize(10 * 1024 * 1024, b'a');
            big.extend_from_slice(b"\"}");
            big
        }
    };
    let mut stream = stream;
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        payload.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&payload);
}

/// Asks for a key the filter has never seen: denied with the failure mode (503), within the
/// lookup timeout (1 s) and some slack.
fn never_seen_gets_the_failure_mode(stack: &Stack, key: &CreatedKey, case: &str) {
    let started = Instant::now();
    let response = stack.get_with_key("/v1/fresh", &key.secret);
    let took = started.elapsed();
    assert_eq!(response.status, 503, "{case}: {response:?}");
    assert!(
        took < Duration::from_millis(2_500),
        "{case}: the failure mode took {took:?} (timeout 1 s)"
    );
}

/// A control plane that hangs (SIGSTOP: connections accepted, never answered) or answers
/// garbage (invalid JSON, a 200 of the wrong shape, a 10 MB body): cached keys keep passing,
/// never-seen keys get the failure mode within the timeout, each failed lookup is counted, and
/// the filter keeps working (never a panic).
#[test]
fn a_hung_or_garbage_control_plane_never_stops_cached_keys() {
    let mut stack = Stack::builder().cache_ttl("1s").start();
    let cached = stack.admin().new_key(Plan::Enterprise);
    let never_seen: Vec<CreatedKey> = (0..4)
        .map(|_| stack.admin().new_key(Plan::Enterprise))
        .collect();
    warm(&stack, &cached);

    let failed = |stack: &Stack| stack.envoy().filter_stat("lookup.failed");
    // Counters reach Envoy's stats on the filter's tick: wait for it.
    let counted = |stack: &Stack, before: u64, case: &str| {
        let moved = eventually(Duration::from_secs(3), Duration::from_millis(50), || {
            (failed(stack) > before).then_some(())
        });
        assert!(
            moved.is_some(),
            "{case}: the failed lookup is counted in lookup.failed"
        );
    };
    let mut before = failed(&stack);
    stack.pause_control_plane();
    std::thread::sleep(Duration::from_millis(1_200)); // past the cache TTL
    for _ in 0..5 {
        assert_passed(&stack.get_with_key("/v1/stale", &cached.secret), &cached);
    }
    never_seen_gets_the_failure_mode(&stack, &never_seen[0], "hung");
    counted(&stack, before, "hung");
    stack.resume_control_plane();
    stack.kill_control_plane();

    for (i, garbage) in [
        Garbage::InvalidJson,
        Garbage::WrongShape,
        Garbage::TenMegabytes,
    ]
    .into_iter()
    .enumerate()
    {
        let case = format!("{garbage:?}");
        // Stale keys are re-asked at most once a second: let the last case's lookups end.
        std::thread::sleep(Duration::from_millis(1_100));
        before = failed(&stack);
        let fake = FakeControlPlane::start(stack.control_plane_port, garbage);
        for _ in 0..5 {
            assert_passed(&stack.get_with_key("/v1/stale", &cached.secret), &cached);
        }
        never_seen_gets_the_failure_mode(&stack, &never_seen[i + 1], &case);
        counted(&stack, before, &case);
        drop(fake);
    }
    assert_eq!(stack.envoy().filter_stat("panics"), 0);
    stack.start_control_plane();
    // And when the control plane is back, the keys the garbage could not verify pass.
    for key in &never_seen {
        let response = stack.get_with_key("/v1/back", &key.secret);
        assert_passed(&response, key);
    }
}

/// Records wait in Envoy's memory while the control plane is away; an Envoy restarted then
/// loses exactly those (`usage.buffered` at the restart), and nothing else.
#[test]
fn an_envoy_restart_loses_exactly_the_records_it_held() {
    const HELD: usize = 200;
    let (mut stack, key) = stack_with_a_recorded_key();
    stack.kill_control_plane();
    for _ in 0..HELD {
        assert_passed(&stack.get_with_key("/v1/held", &key.secret), &key);
    }
    let held = stack.envoy().settled_filter_stat(
        "usage.buffered",
        Duration::from_millis(1_500),
        Duration::from_secs(10),
    );
    stack.restart_envoy();
    stack.start_control_plane();
    assert_passed(&stack.get_with_key("/v1/after", &key.secret), &key);
    let stored: Vec<Value> =
        stack
            .admin()
            .settled_requests(&[("key_id", key.id.clone())], 11, Duration::from_secs(30));
    let lost = 10 + HELD + 1 - stored.len();
    eprintln!("Envoy restarted holding {held} records: {lost} lost");
    assert_eq!(
        held as usize, HELD,
        "every record of the outage was held in memory"
    );
    assert_eq!(lost, HELD, "exactly the records held in memory are lost");
    assert!(
        stored.iter().any(|r| r["endpoint"] == "/v1/after"),
        "the request after the restart is recorded: {:?}",
        stored.last()
    );
}

/// Sets the control plane's file-size limit (`RLIMIT_FSIZE`): past it every write fails, as on
/// a full disk (it ignores SIGXFSZ). `None`: no limit.
fn file_size_limit(pid: u32, bytes: Option<u64>) {
    let limit = libc::rlimit {
        rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit reads `limit` and writes nothing back (null old limit).
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// The database's disk full: the control plane keeps answering lookups, its ingest fails (503,
/// a condition that passes) and the filter keeps the records and sends them again; when there
/// is room again they are stored, each once, and the analytics count each once.
#[test]
fn a_full_disk_fails_ingest_until_there_is_room_and_nothing_is_stored_twice() {
    const WHILE_FULL: usize = 100;
    let (stack, key) = stack_with_a_recorded_key();
    let envoy = stack.envoy();
    let failed_before = envoy.filter_stat("usage.delivery_failed");
    let pid = stack.control_plane_pid();
    file_size_limit(pid, Some(4_096));
    for _ in 0..WHILE_FULL {
        assert_passed(&stack.get_with_key("/v1/full", &key.secret), &key);
    }
    let failing = eventually(Duration::from_secs(10), Duration::from_millis(100), || {
        (envoy.filter_stat("usage.delivery_failed") >= failed_before + 2).then_some(())
    });
    assert!(failing.is_some(), "ingest must fail while the disk is full");
    let log = envoy.log();
    let why = log.lines().find(|l| l.contains("usage delivery failed"));
    eprintln!("while full: {}", why.unwrap_or("?"));
    assert!(
        why.is_some_and(|l| l.contains("usage delivery failed (503 ")),
        "a full disk is a 503: {why:?}"
    );
    assert_eq!(
        stack.admin().get_key(&key.id)["id"],
        key.id.as_str(),
        "reads still answer"
    );
    file_size_limit(pid, None);
    let stored = stack.admin().settled_requests(
        &[("key_id", key.id.clone())],
        10 + WHILE_FULL,
        Duration::from_secs(60),
    );
    let ids: HashSet<&str> = stored
        .iter()
        .map(|r| r["request_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ids.len(), stored.len(), "a record was stored twice");
    assert_eq!(
        stored.len(),
        10 + WHILE_FULL,
        "every record, once there was room"
    );
    let usage = stack.admin().key_usage(&key.id, &[]);
    assert_eq!(
        usage["totals"]["total"],
        10 + WHILE_FULL,
        "the analytics count each record once: {usage}"
    );
    assert_eq!(envoy.filter_stat("usage.dropped"), 0);
}
