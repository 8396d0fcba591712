//! Fixed-rate (open-loop) HTTP/1.1 load generator for `make bench`, std only (built with a bare
//! `rustc -O`). Debian ships wrk, not wrk2, so this is the part of wrk2 the benchmark needs.
//!
//! Request `k` is due at `start + k / rate`. It goes out on any idle keep-alive connection as soon
//! as it is due; its latency is measured from when it was *due*, not when it was sent, so a
//! stalled server is charged for the requests that queued behind the stall (no coordinated
//! omission). The loop spins (non-blocking sockets, no sleeping) on its own core, so timing
//! resolution is a few microseconds; only connections with a request in flight are polled.
//!
//! ```text
//! bench-loadgen --addr 127.0.0.1:10000 --rate 30000 --duration 8 --warmup 1 \
//!     --connections 32 --path /v1/things/1 --header "x-api-key: tg_..."
//! ```
//! Prints one JSON object: requests, errors, non-2xx, achieved rate, latency percentiles (µs).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct Args {
    addr: String,
    rate: f64,
    duration: f64,
    warmup: f64,
    connections: usize,
    path: String,
    headers: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:10000".into(),
        rate: 1000.0,
        duration: 5.0,
        warmup: 1.0,
        connections: 32,
        path: "/".into(),
        headers: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--addr" => args.addr = value,
            "--rate" => args.rate = num(&value)?,
            "--duration" => args.duration = num(&value)?,
            "--warmup" => args.warmup = num(&value)?,
            "--connections" => args.connections = num(&value)? as usize,
            "--path" => args.path = value,
            "--header" => args.headers.push(value),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.rate <= 0.0 || args.connections == 0 {
        return Err("--rate and --connections must be positive".into());
    }
    Ok(args)
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Due time of the request in flight, if any.
    due: Option<Instant>,
}

/// Length of the first complete response in `buf` and its status, if one is complete.
fn complete_response(buf: &[u8]) -> Option<(usize, u16)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let status = head.get(9..12)?.parse::<u16>().ok()?;
    let mut length = 0usize;
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    (buf.len() >= end + length).then_some((end + length, status))
}

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-loadgen: {e}");
            std::process::exit(2);
        }
    };
    let mut request = format!("GET {} HTTP/1.1\r\nHost: bench\r\n", args.path);
    for h in &args.headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let request = request.into_bytes();

    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        match connect(&args.addr) {
            Ok(stream) => conns.push(Conn { stream, buf: Vec::with_capacity(4096), due: None }),
            Err(e) => {
                eprintln!("bench-loadgen: connect {}: {e}", args.addr);
                std::process::exit(1);
            }
        }
    }

    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let stop_sending = measure_from + Duration::from_secs_f64(args.duration);
    // Requests still in flight at the end get this long to finish.
    let hard_stop = stop_sending + Duration::from_secs(2);

    let mut next_due = start;
    let mut latencies_ns: Vec<u64> =
        Vec::with_capacity((args.rate * (args.duration + 0.5)) as usize);
    let (mut errors, mut non_2xx, mut reconnects, mut max_backlog) = (0u64, 0u64, 0u64, 0u64);
    let mut idle: Vec<usize> = (0..conns.len()).collect();
    let mut busy: Vec<usize> = Vec::with_capacity(conns.len());
    let mut chunk = [0u8; 16384];

    loop {
        let now = Instant::now();
        if now >= hard_stop || (now >= stop_sending && busy.is_empty()) {
            break;
        }
        // Send every request that is due, on idle connections.
        if next_due < stop_sending {
            let backlog = (now.saturating_duration_since(next_due).as_nanos()
                / interval.as_nanos().max(1)) as u64;
            max_backlog = max_backlog.max(backlog);
        }
        while next_due <= now && next_due < stop_sending {
            let Some(i) = idle.pop() else { break };
            let c = &mut conns[i];
            match c.stream.write_all(&request) {
                Ok(()) => {
                    c.due = Some(next_due);
                    busy.push(i);
                }
                Err(_) => {
                    errors += 1;
                    reconnects += 1;
                    if let Ok(s) = connect(&args.addr) {
                        c.stream = s;
                        c.buf.clear();
                    }
                    idle.push(i);
                }
            }
            next_due += interval;
        }
        // Poll connections with a request in flight.
        let mut k = 0;
        while k < busy.len() {
            let i = busy[k];
            let c = &mut conns[i];
            let mut done = false;
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    errors += 1;
                    reconnects += 1;
                    if let Ok(s) = connect(&args.addr) {
                        c.stream = s;
                    }
                    c.buf.clear();
                    done = true;
                }
                Ok(n) => {
                    c.buf.extend_from_slice(&chunk[..n]);
                    if let Some((len, status)) = complete_response(&c.buf) {
                        let t = Instant::now();
                        let due = c.due.unwrap_or(t);
                        if due >= measure_from {
                            latencies_ns.push(t.saturating_duration_since(due).as_nanos() as u64);
                            if !(200..300).contains(&status) {
                                non_2xx += 1;
                            }
                        }
                        c.buf.drain(..len);
                        done = true;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {
                    errors += 1;
                    reconnects += 1;
                    if let Ok(s) = connect(&args.addr) {
                        c.stream = s;
                    }
                    c.buf.clear();
                    done = true;
                }
            }
            if done {
                c.due = None;
                busy.swap_remove(k);
                idle.push(i);
            } else {
                k += 1;
            }
        }
    }
    let unfinished = busy.len() as u64;
    latencies_ns.sort_unstable();
    let n = latencies_ns.len();
    let mean = if n == 0 { 0.0 } else { latencies_ns.iter().sum::<u64>() as f64 / n as f64 / 1000.0 };
    println!(
        "{{\"target_rate\": {:.1}, \"requests\": {n}, \"rate\": {:.1}, \"errors\": {errors}, \
         \"unfinished\": {unfinished}, \"non_2xx\": {non_2xx}, \"reconnects\": {reconnects}, \
         \"max_backlog\": {max_backlog}, \"connections\": {}, \"latency_us\": {{\"mean\": {mean:.1}, \
         \"p50\": {:.1}, \"p90\": {:.1}, \"p99\": {:.1}, \"p999\": {:.1}, \"max\": {:.1}}}}}",
        args.rate,
        n as f64 / args.duration,
        args.connections,
        percentile(&latencies_ns, 50.0),
        percentile(&latencies_ns, 90.0),
        percentile(&latencies_ns, 99.0),
        percentile(&latencies_ns, 99.9),
        percentile(&latencies_ns, 100.0),
    );
}
