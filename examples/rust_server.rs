//! A zero-downtime HTTP server for sockvisor in Rust: the socket comes from
//! LISTEN_FDS through the `listenfd` crate (which checks LISTEN_PID),
//! READY=1 goes to NOTIFY_SOCKET in a few lines of std, and SIGQUIT or
//! SIGTERM stop accepting, finish the requests in flight, and exit 0.
//!
//! ```sh
//! cargo build --release --example rust_server
//! sockvisor run --listen 127.0.0.1:8080 -- target/release/examples/rust_server
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        let socket = UnixDatagram::unbound().expect("a datagram socket");
        let _ = socket.send_to(state.as_bytes(), path);
    }
}

fn answer(stream: TcpStream) {
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    // Read the request head; the body of a GET is empty.
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
        line.clear();
    }
    let body = format!("hello from pid {}\n", std::process::id());
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = (&stream).write_all(response.as_bytes());
}

fn main() {
    let mut listenfd = listenfd::ListenFd::from_env();
    let listener: TcpListener = listenfd
        .take_tcp_listener(0)
        .expect("fd 3 is a TCP listener")
        .expect("no socket from LISTEN_FDS: run it under sockvisor");
    let stopping = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGQUIT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stopping)).expect("signal handler");
    }
    // Non-blocking accept, so a stop is noticed between connections.
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    notify("READY=1");
    let mut in_flight = Vec::new();
    while !stopping.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                in_flight.push(thread::spawn(move || answer(stream)));
            }
            Err(_) => thread::sleep(Duration::from_millis(2)),
        }
        in_flight.retain(|t| !t.is_finished());
    }
    for request in in_flight {
        let _ = request.join();
    }
}
