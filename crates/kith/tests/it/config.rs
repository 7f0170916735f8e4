//! `kith serve` configured without flags: from `--config FILE` (TOML) or from `KITH_<FLAG>`
//! environment variables, with a flag beating its variable beating the file; a key that is
//! no flag stops the node before it starts, naming the key.

use std::process::Command;

use crate::harness::{free_port, http, leads_on, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_from_a_config_file_alone_and_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let file = dir.path().join("kith.toml");
    std::fs::write(
        &file,
        format!(
            "id = 1\nlisten = \"127.0.0.1:{port}\"\ndata = \"{}\"\npeers = \"1=127.0.0.1:{port}\"\n\
             value-bytes-max = 1000\ncors-origin = [\"https://app.example\"]\n",
            dir.path().join("data").display()
        ),
    )
    .expect("config file");
    let _node = serve(
        &["--config", file.to_str().unwrap()],
        &[],
        &dir.path().join("log"),
    );
    leads_on(port).await;
    let http = http();
    let url = format!("http://127.0.0.1:{port}/v1/kv/greeting");
    let put = http.put(&url).body("hello").send().await.expect("put");
    assert!(put.status().is_success(), "{}", put.status());
    let got = http.get(&url).send().await.expect("get");
    assert_eq!(got.text().await.unwrap(), "hello");
    // The file's value-bytes-max holds: a value over 1000 bytes is refused.
    let big = http.put(&url).body(vec![b'x'; 2000]).send().await.unwrap();
    assert_eq!(big.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_from_environment_variables_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _node = serve(
        &[],
        &[
            ("KITH_ID", "1".into()),
            ("KITH_LISTEN", addr.clone()),
            ("KITH_DATA", dir.path().join("data").display().to_string()),
            ("KITH_PEERS", format!("1={addr}")),
        ],
        &dir.path().join("log"),
    );
    leads_on(port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_beats_its_variable_which_beats_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (from_file, from_env, from_flag) = (free_port(), free_port(), free_port());
    let file = dir.path().join("kith.toml");
    std::fs::write(
        &file,
        format!(
            "id = 1\nlisten = \"127.0.0.1:{from_file}\"\npeers = \"1=127.0.0.1:{from_file}\"\n"
        ),
    )
    .expect("config file");
    let config = file.to_str().unwrap();

    // The variable beats the file: the node listens where KITH_LISTEN says.
    let data = dir.path().join("a").display().to_string();
    // (`--peers` must name the address the node is reached at, whichever source gave it.)
    let peers = format!("1=127.0.0.1:{from_env}");
    let node = serve(
        &["--config", config, "--data", &data, "--peers", &peers],
        &[("KITH_LISTEN", format!("127.0.0.1:{from_env}"))],
        &dir.path().join("log-a"),
    );
    leads_on(from_env).await;
    drop(node);

    // The flag beats both.
    let data = dir.path().join("b").display().to_string();
    let listen = format!("127.0.0.1:{from_flag}");
    let peers = format!("1={listen}");
    let _node = serve(
        &[
            "--config", config, "--data", &data, "--listen", &listen, "--peers", &peers,
        ],
        &[("KITH_LISTEN", format!("127.0.0.1:{from_env}"))],
        &dir.path().join("log-b"),
    );
    leads_on(from_flag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_stops_the_node_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("kith.toml");
    std::fs::write(
        &file,
        "id = 1\nlisten = \"127.0.0.1:1\"\nlisen = \"oops\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kith"))
        .args(["serve", "--config", file.to_str().unwrap(), "--data"])
        .arg(dir.path().join("data"))
        .env_remove("KITH_CONFIG")
        .output()
        .expect("run kith serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'lisen'") && stderr.contains("kith.toml"),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was created");
}
