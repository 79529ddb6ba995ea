//! `packaging/kubernetes/deployment.yaml` is valid YAML whose sockvisor
//! command line, probes and grace period agree with sockvisor itself: every
//! flag it passes parses, the probe is `status --check`, and the grace
//! period is longer than `--stop-timeout`.

mod common;

use std::process::Command;

use clap::Parser;
use common::*;
use yaml_rust2::{Yaml, YamlLoader};

fn deployment() -> Yaml {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/kubernetes/deployment.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

fn strings(list: &Yaml) -> Vec<String> {
    list.as_vec()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_deployment_runs_sockvisor_with_flags_it_accepts() {
    let doc = deployment();
    assert_eq!(doc["kind"].as_str(), Some("Deployment"));
    let pod = &doc["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let command = strings(&container["command"]);
    assert_eq!(&command[..2], ["sockvisor", "run"]);
    // Parse the same command line with this sockvisor's own definition.
    match sockvisor::cli::Cli::try_parse_from(&command) {
        Ok(cli) => assert!(matches!(cli.command, sockvisor::cli::Command::Run(_))),
        Err(err) => panic!("{command:?} does not parse: {err}"),
    }
    let stop_timeout = command
        .iter()
        .position(|a| a == "--stop-timeout")
        .map(|i| sockvisor::duration::parse_duration(&command[i + 1]).unwrap())
        .unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(
        grace as u64 > stop_timeout.as_secs(),
        "grace {grace} s must exceed --stop-timeout {stop_timeout:?}"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            strings(&container[probe]["exec"]["command"]),
            ["sockvisor", "status", "--check"],
            "{probe}"
        );
    }
}

#[test]
fn the_probe_command_exists_and_answers() {
    let sockvisor = {
        let dir = TestDir::new("k8s-probe");
        let mut command = Command::new(sockvisor_bin());
        command
            .args(["run", "--listen", "127.0.0.1:0", "--"])
            .args(Sockvisor::probe_args(&dir.path));
        Sockvisor::spawn(dir, command)
    };
    sockvisor.wait_for_log("is ready after");
    let probe = strings(
        &deployment()["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"],
    );
    let output = sockvisor.client(&probe[1..].iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}
