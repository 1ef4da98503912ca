//! Just enough IP parsing to log what crossed the link.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Addresses, ports (0 for ICMP) and protocol of a packet, plus where its L4 payload starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (UDP/TCP), ICMP identifier for ICMP echo/timestamp.
    pub sport: u16,
    /// Destination port (UDP/TCP), 0 for ICMP.
    pub dport: u16,
    /// IP protocol number (1 ICMP, 6 TCP, 17 UDP, 58 ICMPv6).
    pub proto: u8,
    /// Offset of the data after the L4 header (UDP: +8; TCP: +data offset; ICMP: +8).
    pub payload_at: usize,
}

/// Parses an IPv4 or IPv6 packet (no extension headers). `None` for anything else.
pub fn parse_ip(p: &[u8]) -> Option<FiveTuple> {
    let v = p.first()? >> 4;
    let (src, dst, proto, l4) = match v {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            if p.len() < ihl.max(20) {
                return None;
            }
            let s = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            let d = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            (IpAddr::V4(s), IpAddr::V4(d), p[9], ihl)
        }
        6 => {
            if p.len() < 40 {
                return None;
            }
            let mut s = [0u8; 16];
            s.copy_from_slice(&p[8..24]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&p[24..40]);
            (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)), p[6], 40)
        }
        _ => return None,
    };
    let l = p.get(l4..)?;
    let be = |i: usize| l.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).unwrap_or(0);
    let (sport, dport, hl) = match proto {
        17 => (be(0), be(2), 8),
        6 => (be(0), be(2), usize::from(l.get(12).copied().unwrap_or(0x50) >> 4) * 4),
        1 | 58 => (be(4), 0, 8),
        _ => (0, 0, 0),
    };
    Some(FiveTuple { src, dst, sport, dport, proto, payload_at: (l4 + hl).min(p.len()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_v4() {
        let mut p = vec![0x45, 0, 0, 36, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        p.extend_from_slice(&[0x13, 0x88, 0x40, 0x00, 0, 16, 0, 0]);
        p.extend_from_slice(&[0, 2, 0, 0, 1, 2, 3, 4]);
        let t = parse_ip(&p).unwrap();
        assert_eq!((t.sport, t.dport, t.proto, t.payload_at), (5000, 16384, 17, 28));
        assert_eq!(t.dst, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        assert!(parse_ip(&p[..10]).is_none());
        assert!(parse_ip(&[0x20]).is_none());
    }
}
