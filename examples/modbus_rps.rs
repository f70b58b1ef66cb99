//! Requests per second on one Modbus TCP connection with edgegw's client code path
//! (`sources::modbus::connect` + `timed_read`, the timeout wrapper the source uses).
//! The counterpart of `benches/c/libmodbus-client.c`; `scripts/bench-modbus` runs both.
//!
//! Usage: modbus_rps PORT N COUNT [HOST]

use edgegw::profiles::Table;
use edgegw::sources::modbus::{connect, timed_read};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        anyhow::bail!("usage: modbus_rps PORT N COUNT [HOST]");
    }
    let port: u16 = args[1].parse()?;
    let n: u32 = args[2].parse()?;
    let count: u16 = args[3].parse()?;
    let host = args.get(4).cloned().unwrap_or_else(|| "127.0.0.1".into());
    // One connection, one request at a time: a single-threaded runtime, like the C
    // client's single thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let timeout = Duration::from_millis(1000);
        let mut ctx = connect(&format!("{host}:{port}"), 1, timeout).await?;
        let started = Instant::now();
        for i in 0..n {
            let addr = ((i * 7) % 9000) as u16;
            match timed_read(&mut ctx, Table::Holding, addr, count, timeout).await? {
                Ok(_) => {}
                Err(code) => anyhow::bail!("exception {code:?} at {addr}"),
            }
        }
        let s = started.elapsed().as_secs_f64();
        println!(
            "{n} requests of {count} registers in {s:.3} s: {:.0} req/s, {:.1} us/req",
            f64::from(n) / s,
            s / f64::from(n) * 1e6
        );
        Ok(())
    })
}
