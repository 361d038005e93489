//! VM tier, network policy. The test serves a fixed page on the host's
//! 127.0.0.1 (ephemeral port); under `--network allow_all` the guest fetches it
//! through the user-mode network's gateway 10.0.2.2 (which QEMU maps to the
//! host's loopback); under `--network none` the same fetch fails and the guest
//! has no interface but `lo`. No traffic goes anywhere but the host's loopback.
//! Run alone: `cargo test -p hearth-cli --test vm_lang_network`.

mod vm_common;

use std::io::{Read, Write};
use std::net::TcpListener;

use vm_common::{vm_lock, Env};

const PAGE: &str = "hearth network test page 7f3a\n";

/// Serves `PAGE` to every connection on 127.0.0.1:0 from a detached thread.
fn serve_page() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let _ = c.read(&mut buf);
            let resp = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                PAGE.len()
            );
            let _ = c.write_all(resp.as_bytes());
        }
    });
    port
}

fn fetch(port: u16) -> String {
    format!(
        "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://10.0.2.2:{port}/', timeout=10).read().decode(), end='')\""
    )
}

#[test]
fn allow_all_reaches_host_loopback_and_none_has_only_lo() {
    let env = Env::new();
    env.image("python");
    let port = serve_page();
    let _vms = vm_lock();

    let open = env.create(&["--language", "python", "--network", "allow_all"]);
    assert_eq!(env.record(&open)["network"], "allow_all");
    assert_eq!(env.sh(&open, &fetch(port)), PAGE);
    let resolv = env.sh(&open, "cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.0.2.3"), "{resolv}");
    let ifaces = env.sh(&open, "ls /sys/class/net");
    assert!(
        ifaces.split_whitespace().count() == 2 && ifaces.contains("lo"),
        "allow_all should have lo and one NIC: {ifaces}"
    );

    let closed = env.create(&["--language", "python", "--network", "none"]);
    assert_eq!(env.record(&closed)["network"], "none");
    assert_eq!(env.sh(&closed, "ls /sys/class/net"), "lo\n");
    let o = env.run(&[
        "vm",
        "exec",
        "--vm",
        &closed,
        "--timeout",
        "60",
        "--cmd",
        &fetch(port),
    ]);
    assert!(
        !o.status.success(),
        "fetch succeeded without a network: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains(PAGE.trim()));
}
