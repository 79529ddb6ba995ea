//! `--worker-max-age` and `--worker-max-rss` as an operator runs them:
//! workers are replaced surge-first in their slots, one at a time, with no
//! failed request; a replacement that cannot start leaves the old worker
//! serving; the counters survive a re-exec. (Memory recycling is tested
//! with the metrics endpoint, in `metrics.rs`.)

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

fn counters(status: &Value) -> (u64, u64) {
    let counters = &status["counters"];
    (
        counters["recycles"].as_u64().unwrap_or(0),
        counters["recycle_failures"].as_u64().unwrap_or(0),
    )
}

fn pids(status: &Value) -> Vec<i64> {
    status["generations"][0]["workers"]
        .as_array()
        .map(|workers| workers.iter().filter_map(|w| w["pid"].as_i64()).collect())
        .unwrap_or_default()
}

#[test]
fn workers_at_their_age_are_replaced_one_at_a_time_under_load_and_across_a_reexec() {
    let mut sockvisor = Sockvisor::listening_probe(
        "recycle-age",
        &["--workers", "2", "--worker-max-age", "1s"],
        &["--request-delay-ms", "2"],
    );
    let address = sockvisor.logged_tcp_address();
    let first = sockvisor.wait_for("generation 1 to serve", || {
        let status = status_json(&sockvisor);
        (status["current"] == 1).then_some(pids(&status))
    });
    let load = Load::start(&address, 4);
    load.wait_for_answers(50);
    let mut most = 0;
    let replaced = sockvisor.wait_for("both workers replaced", || {
        let status = status_json(&sockvisor);
        most = most.max(pids(&status).len());
        let now: BTreeSet<i64> = pids(&status).into_iter().collect();
        (counters(&status).0 >= 2 && first.iter().all(|pid| !now.contains(pid))).then_some(status)
    });
    assert!(
        most <= 3,
        "{most} processes for 2 workers, one replacement at a time"
    );
    for pid in &first {
        assert!(!process_alive(*pid), "replaced worker {pid} still runs");
    }
    assert_eq!(replaced["current"], 1, "recycling is not an upgrade");
    let log = sockvisor.stderr();
    assert!(
        log.contains("old (--worker-max-age 1s): replacing it"),
        "{log}"
    );
    assert!(log.contains("replaced by pid"), "{log}");

    // The counters go on under a re-executed sockvisor.
    let before = counters(&status_json(&sockvisor)).0;
    let output = sockvisor.client(&["reexec", "--timeout", "20s"]);
    assert!(output.status.success(), "{output:?}");
    sockvisor.wait_for("recycling to go on after the re-exec", || {
        (counters(&status_json(&sockvisor)).0 > before).then_some(())
    });
    load.wait_for_answers(50);
    let result = load.stop();
    assert_eq!(result.failures, Vec::<String>::new());
    assert!(result.pids.len() >= 4, "answers from {:?}", result.pids);
    sockvisor.signal(libc::SIGTERM);
    assert_eq!(sockvisor.wait_exit(), 0);
}

#[test]
fn a_replacement_that_fails_leaves_the_old_worker_serving() {
    let dir = TestDir::new("recycle-fail");
    let marker = dir.join("started-once");
    // The first start serves; every later one fails before it is ready.
    let script = format!(
        "if [ -e '{marker}' ]; then exit 3; fi; : > '{marker}'; exec \"$@\"",
        marker = marker.display()
    );
    let mut server = vec!["/bin/sh".to_string(), "-c".into(), script, "sh".into()];
    server.extend(Sockvisor::probe_args(&dir.path));
    let mut sockvisor = Sockvisor::listening_in(dir, &["--worker-max-age", "1s"], &server);
    let address = sockvisor.logged_tcp_address();
    let serving = sockvisor.wait_for("generation 1 to serve", || {
        let status = status_json(&sockvisor);
        (status["current"] == 1).then(|| pids(&status)[0])
    });
    sockvisor.wait_for("two failed replacements", || {
        (counters(&status_json(&sockvisor)).1 >= 2).then_some(())
    });
    let status = status_json(&sockvisor);
    assert_eq!(counters(&status).0, 0, "{status}");
    assert_eq!(pids(&status)[0], serving, "the old worker keeps its slot");
    let response = http_get_tcp(&address).unwrap();
    assert_eq!(answering_pid(&response), Some(format!("pid={serving}")));
    let log = sockvisor.stderr();
    assert!(
        log.contains(&format!("pid {serving} keeps serving")),
        "{log}"
    );
    sockvisor.signal(libc::SIGTERM);
    assert_eq!(sockvisor.wait_exit(), 0);
}
