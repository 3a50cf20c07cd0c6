//! Which cores the two sides of the `rate` benchmark run on.
//!
//! Left to the scheduler, the load generator and the peer it measures (the server, or the
//! echo server of the baseline) share every core, and the generator's own work, a socket
//! bound and closed for every exchange, takes the server's CPU as no device on a network
//! does. How much it takes depends on where the scheduler puts the threads: on two
//! cores the echo baseline of one and the same build varied between 31,000 and 51,000
//! exchanges a second from run to run. Split, the devices' side runs on the first half
//! of the cores this process may use and the peer on the rest, the echo server as much
//! as the server, so that baseline and server are measured on the same cores.

use std::io;
use std::path::Path;

/// The cores of each side; see the module's documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    devices: Vec<usize>,
    peer: Vec<usize>,
}

impl Split {
    /// The split of the cores this process may run on; `None` with fewer than two.
    pub fn of_this_process() -> io::Result<Option<Split>> {
        let all = allowed()?;
        if all.len() < 2 {
            return Ok(None);
        }
        let (devices, peer) = all.split_at(all.len() / 2);
        Ok(Some(Split {
            devices: devices.to_vec(),
            peer: peer.to_vec(),
        }))
    }

    /// Pins every thread of this process to the devices' cores (threads it starts later
    /// inherit the core of the thread that starts them).
    pub fn pin_devices(&self) -> io::Result<()> {
        pin_every_thread(&self.devices)
    }

    /// Gives every thread of this process back all the cores of the split.
    pub fn unpin(&self) -> io::Result<()> {
        let mut all = self.devices.clone();
        all.extend_from_slice(&self.peer);
        pin_every_thread(&all)
    }

    /// Runs `spawn` with the calling thread on the peer's cores: a child process it
    /// starts begins there and keeps them for every thread it makes.
    pub fn on_peer_cores<T>(&self, spawn: impl FnOnce() -> T) -> io::Result<T> {
        set_affinity(0, &self.peer)?;
        let out = spawn();
        set_affinity(0, &self.devices)?;
        Ok(out)
    }

    /// `cores=` of the benchmark's line: which core numbers each side had.
    pub fn describe(&self) -> String {
        let list = |c: &[usize]| c.iter().map(usize::to_string).collect::<Vec<_>>().join("+");
        format!("devices:{},peer:{}", list(&self.devices), list(&self.peer))
    }
}

/// The cores the calling thread may run on, in order.
fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set; the size passed is its own.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
    // SAFETY: `cpu` is below CPU_SETSIZE, the set's capacity.
    Ok((0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Pins thread `tid` (0: the calling thread) to `cpus`.
fn set_affinity(tid: libc::pid_t, cpus: &[usize]) -> io::Result<()> {
    // SAFETY: as in `allowed`; CPU_SET is given cores read from the kernel's own set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    let r = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn pin_every_thread(cpus: &[usize]) -> io::Result<()> {
    for entry in std::fs::read_dir(Path::new("/proc/self/task"))? {
        let tid = entry?
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<libc::pid_t>().ok());
        if let Some(tid) = tid {
            set_affinity(tid, cpus)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_started_on_its_cores_runs_there_and_this_thread_comes_back() {
        let Some(split) = Split::of_this_process().expect("affinity") else {
            return; // one core: nothing to split
        };
        let before = allowed().expect("allowed");
        let child = split
            .on_peer_cores(|| {
                std::process::Command::new("sleep")
                    .arg("5")
                    .spawn()
                    .expect("spawn sleep")
            })
            .expect("peer cores");
        let mut child = child;
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()));
        let _ = child.kill();
        let _ = child.wait();
        let status = status.expect("child status");
        let listed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list")
            .trim()
            .to_string();
        let peer = split.peer.iter().map(usize::to_string).collect::<Vec<_>>();
        // The kernel lists ranges ("1-3") or single cores ("1"); either way the first
        // and last peer cores bound it.
        assert!(
            listed.starts_with(&peer[0]) && listed.ends_with(&peer[peer.len() - 1]),
            "child on {listed}, peer cores {peer:?}"
        );
        assert_eq!(allowed().expect("allowed"), split.devices);
        set_affinity(0, &before).expect("restore");
    }
}
