//! Upload files with the SDK while publishing telemetry on the same connection.
//!
//! ```text
//! cargo run -p quicft-client --example upload -- FILE... [--server HOST] [--tcp]
//! ```
//! Connects to a quicft server (default `localhost`, QUIC with TLS fallback; the zero-config
//! server's dev CA at ./quicft-data/certs/ca.pem is trusted when present), uploads every FILE at
//! once, prints progress twice a second and a telemetry round trip every second, then a summary
//! per file. Run it again after interrupting it: it resumes where the server stands.

use std::time::{Duration, Instant};

use quicft_client::{CaSource, Client, ClientOptions, QoS, Transport, UploadOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut files = Vec::new();
    let mut host = "localhost".to_owned();
    let mut tcp = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--server" => host = args.next().unwrap_or(host),
            "--tcp" => tcp = true,
            _ => files.push(std::path::PathBuf::from(a)),
        }
    }
    anyhow::ensure!(
        !files.is_empty(),
        "usage: upload FILE... [--server HOST] [--tcp]"
    );

    let mut options = if tcp {
        ClientOptions::new(host, Transport::Tls)
    } else {
        ClientOptions::auto(host)
    };
    options.client_id = "example-uploader".into();
    if std::path::Path::new("quicft-data/certs/ca.pem").exists() {
        options.tls.ca = CaSource::File("quicft-data/certs/ca.pem".into());
    }
    let client = Client::connect(options).await?;
    println!("connected over {}", client.info().transport);

    let mut uploads = Vec::new();
    for f in &files {
        uploads.push(client.upload(f.as_path(), UploadOptions::default()).await?);
    }
    let progress: Vec<_> = uploads.iter().map(|u| u.progress()).collect();
    let waits: Vec<_> = uploads
        .into_iter()
        .map(|u| tokio::spawn(u.wait()))
        .collect();

    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut n = 0u64;
    while !waits.iter().all(|w| w.is_finished()) {
        tick.tick().await;
        n += 1;
        for (f, p) in files.iter().zip(&progress) {
            let p = p.borrow().clone();
            println!(
                "{}: {:?} {}/{} bytes, {:.1} Mbit/s, eta {:?}",
                f.display(),
                p.state,
                p.bytes_acked,
                p.total.unwrap_or(0),
                p.rate * 8.0 / 1e6,
                p.eta.map(|d| Duration::from_secs(d.as_secs()))
            );
        }
        // Every other tick: once a second.
        if n & 1 == 0 {
            let t = Instant::now();
            client
                .publish("example/telemetry", format!("{n}"), QoS::AtLeastOnce)
                .await?;
            println!("telemetry acknowledged in {:?}", t.elapsed());
        }
    }
    for (f, w) in files.iter().zip(waits) {
        let r = w.await??;
        println!(
            "{}: {} bytes in {:.2} s, id {}, {} re-sent",
            f.display(),
            r.bytes,
            r.seconds,
            r.file_id,
            r.bytes_resent
        );
    }
    client.disconnect().await?;
    Ok(())
}
