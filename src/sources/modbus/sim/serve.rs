//! Serving the simulated device: the TCP and RTU servers, one service per
//! connection, and the answer to each request (reads, exceptions, silence).

use super::{Simulator, State};
use crate::profiles::Table;
use std::future::Ready;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

impl Simulator {
    /// Listens on `addr` (port 0 picks one) and serves in a spawned task. Aborting the
    /// returned handle stops the server and closes its connections.
    pub async fn bind(&self, addr: SocketAddr) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let sim = self.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = sim.serve(listener).await {
                tracing::warn!(error = %e, "Modbus simulator stopped.");
            }
        });
        Ok((local, handle))
    }

    /// Serves Modbus TCP on `listener` until dropped (its connections end with it).
    pub async fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        let server = tokio_modbus::server::tcp::Server::new(listener);
        let state = self.state.clone();
        let on_connected = move |stream: tokio::net::TcpStream, _addr: SocketAddr| {
            let state = state.clone();
            async move {
                let _ = stream.set_nodelay(true);
                state.connections_total.fetch_add(1, Ordering::Relaxed);
                state.connections_open.fetch_add(1, Ordering::Relaxed);
                let svc = ConnService {
                    state: state.clone(),
                    _guard: Arc::new(ConnGuard(state)),
                };
                Ok(Some((svc, stream)))
            }
        };
        server
            .serve(&on_connected, |e| {
                tracing::debug!(error = %e, "Modbus simulator connection ended with an error.");
            })
            .await
    }

    /// Serves Modbus RTU on an open serial port (one end of a pty pair in tests)
    /// until dropped.
    pub async fn serve_rtu(&self, port: tokio_serial::SerialStream) -> std::io::Result<()> {
        let server = tokio_modbus::server::rtu::Server::new(port);
        server
            .serve_forever(ConnService {
                state: self.state.clone(),
                _guard: Arc::new(ConnGuard(self.state.clone())),
            })
            .await
    }
}

/// Counts a connection as closed when its service is dropped.
struct ConnGuard(Arc<State>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

struct ConnService {
    state: Arc<State>,
    _guard: Arc<ConnGuard>,
}

impl Service for ConnService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        std::future::ready(self.state.answer(req))
    }
}

impl State {
    pub(super) fn answer(
        &self,
        req: SlaveRequest<'static>,
    ) -> Result<Option<Response>, ExceptionCode> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.requests_by_unit[usize::from(req.slave)].fetch_add(1, Ordering::Relaxed);
        if self.silent.load(Ordering::Relaxed) || self.unit.is_some_and(|u| u != req.slave) {
            return Ok(None);
        }
        let (table, start, count) = match req.request {
            Request::ReadCoils(a, n) => (Table::Coil, a, n),
            Request::ReadDiscreteInputs(a, n) => (Table::Discrete, a, n),
            Request::ReadHoldingRegisters(a, n) => (Table::Holding, a, n),
            Request::ReadInputRegisters(a, n) => (Table::Input, a, n),
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        let limit = if table.is_bits() { 2000 } else { 125 };
        if count == 0 || count > limit {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let (s, e) = (u32::from(start), u32::from(start) + u32::from(count) - 1);
        if e > 65535 {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        if self
            .forbidden
            .iter()
            .any(|&(t, fs, fe)| t == table && fs <= e && s <= fe)
        {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        if !self
            .regions
            .iter()
            .any(|&(t, rs, re)| t == table && rs <= s && e <= re)
        {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let words = self.read(table, s, usize::from(count))?;
        Ok(Some(match table {
            Table::Holding => Response::ReadHoldingRegisters(words),
            Table::Input => Response::ReadInputRegisters(words),
            Table::Coil => Response::ReadCoils(words.iter().map(|w| *w != 0).collect()),
            Table::Discrete => {
                Response::ReadDiscreteInputs(words.iter().map(|w| *w != 0).collect())
            }
        }))
    }

    /// Current contents of `count` registers (or bits, as 0/1) from `start`; exception
    /// 0x04 for a waveform block whose recording has been played once to its end.
    fn read(&self, table: Table, start: u32, count: usize) -> Result<Vec<u16>, ExceptionCode> {
        let mut out = vec![0u16; count];
        let end = start + count as u32;
        let t = self.started.elapsed().as_secs_f64();
        for sc in self.scalars.iter().filter(|x| x.table == table) {
            if sc.start + sc.width <= start || sc.start >= end {
                continue;
            }
            let words = sc.current(t, &self.model, self.steady.load(Ordering::Relaxed));
            for (i, w) in words.iter().enumerate() {
                let a = sc.start + i as u32;
                if (start..end).contains(&a) {
                    let slot = &mut out[(a - start) as usize];
                    // Several bools may share one register, each its own bit.
                    if sc.bit.is_some() {
                        *slot |= *w;
                    } else {
                        *slot = *w;
                    }
                }
            }
        }
        for b in self.blocks.iter().filter(|x| x.table == table) {
            let sw = b.data_type.registers().unwrap_or(1) as u32;
            let b_end = b.start + b.samples as u32 * sw;
            if b_end <= start || b.start >= end {
                continue;
            }
            let Ok(mut p) = b.play.lock() else { continue };
            if p.finished {
                return Err(ExceptionCode::ServerDeviceFailure);
            }
            if (start == b.start || p.current.is_empty()) && !b.advance(&mut p) {
                p.finished = true;
                tracing::info!(
                    channel = %b.channel,
                    blocks_served = p.served,
                    unserved_samples = p.remaining(),
                    "Waveform recording played once to its end; reads of its block now answer exception 0x04."
                );
                drop(p);
                self.update_finished();
                return Err(ExceptionCode::ServerDeviceFailure);
            }
            for a in start.max(b.start)..end.min(b_end) {
                out[(a - start) as usize] =
                    p.current.get((a - b.start) as usize).copied().unwrap_or(0);
            }
        }
        Ok(out)
    }

    /// See [`Simulator::finished`]. Takes each block's lock in turn, never two.
    pub(super) fn all_played(&self) -> bool {
        let mut any_once = false;
        for b in &self.blocks {
            let Ok(p) = b.play.lock() else { return false };
            if p.once {
                any_once = true;
                if !p.finished {
                    return false;
                }
            } else if !p.recordings.is_empty() {
                return false;
            }
        }
        any_once
    }

    pub(super) fn update_finished(&self) {
        let done = self.all_played();
        self.finished.send_if_modified(|old| {
            let changed = *old != done;
            *old = done;
            changed
        });
    }
}
