//! Small socket helpers that std does not offer.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// Asks for a larger UDP receive buffer (best effort; the kernel caps it at `rmem_max`), so a
/// burst of reports queues in the kernel instead of being dropped while the receiver is busy.
pub fn set_recv_buffer(socket: &UdpSocket, bytes: i32) {
    let fd = socket.as_raw_fd();
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `fd` is a valid socket owned by `socket` for the duration of the call; the
        // option value points to a live `c_int` whose exact size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
    tracing::debug!("could not enlarge the UDP receive buffer");
}
