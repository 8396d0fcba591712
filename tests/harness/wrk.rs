//! `wrk` (Debian package `wrk`, in the Makefile's `TEST_TOOLS`) for loads the test process cannot
//! generate fast enough, driven by a Lua script. Scripts report their counts with a line
//! `RESULT name=value name=value ...` from `done()`, which [`WrkRun::result`] parses.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::signal;
use crate::tools::program;

#[derive(Debug)]
pub struct WrkRun {
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl WrkRun {
    /// The `RESULT` line's values.
    pub fn result(&self) -> HashMap<String, u64> {
        self.stdout
            .lines()
            .filter_map(|line| line.strip_prefix("RESULT "))
            .flat_map(|rest| rest.split_whitespace())
            .filter_map(|pair| pair.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect()
    }
}

/// Runs `wrk -t threads -c connections -d max_duration -s <script> url -- args... <dir>` and
/// waits. The script gets a directory as its last argument: a thread that has finished its share
/// writes a file there (any name) and calls `wrk.thread:stop()`; once every thread has (wrk
/// itself would otherwise wait out `-d`), wrk is interrupted (SIGINT), which makes it run
/// `done()` and print its summary.
pub fn run(
    url: &str,
    script: &str,
    threads: u32,
    connections: u32,
    max_duration: Duration,
    args: &[String],
) -> WrkRun {
    let dir = tempfile::tempdir().expect("temporary directory for the wrk script");
    let path = dir.path().join("script.lua");
    std::fs::write(&path, script).expect("write the wrk script");
    let finished = dir.path().join("finished");
    std::fs::create_dir(&finished).expect("create the finished directory");
    let started = Instant::now();
    let mut child = Command::new(program("wrk"))
        .args(["-t", &threads.to_string()])
        .args(["-c", &connections.to_string()])
        .args(["-d", &format!("{}s", max_duration.as_secs().max(1))])
        .args(["--timeout", "5s"])
        .arg("-s")
        .arg(&path)
        .arg(url)
        .arg("--")
        .args(args)
        .arg(format!("{}/", finished.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wrk");
    loop {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        let done = std::fs::read_dir(&finished).map_or(0, |d| d.count());
        if done >= threads as usize {
            signal(child.id(), libc::SIGINT);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("wait for wrk");
    let run = WrkRun {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    };
    assert!(
        output.status.success(),
        "wrk failed ({}): {}\n{}",
        output.status,
        run.stdout,
        run.stderr
    );
    run
}
