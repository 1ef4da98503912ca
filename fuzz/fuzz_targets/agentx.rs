//! AgentX PDUs as the SNMP subagent reads them from its master: the framed parse never panics,
//! a Response round-trips through the emitter (parse → emit → parse → equal), and any parsed
//! Get, GetNext or GetBulk is answered from a view of real rows without a panic, in OID order.
#![no_main]
#![forbid(unsafe_code)]

use ipsla_agent::snmp::mib::{Row, View};
use ipsla_agent::snmp::session::answer;
use ipsla_core::schedule::{OperState, ScheduleConfig};
use ipsla_wire::agentx::{self, Emit, HEADER_LEN, Header, Pdu, Value};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static VIEW: LazyLock<View> = LazyLock::new(|| {
    let row = |id, kind| Row {
        id,
        kind,
        tag: "fuzz".into(),
        target: Some("192.168.1.200".parse().unwrap()),
        port: Some(5000),
        source: None,
        source_port: 0,
        tos: 0,
        vrf: None,
        threshold_ms: 5000,
        timeout_ms: 5000,
        frequency_s: 60,
        control: true,
        train: Some((10, 20)),
        voice: None,
        precision: None,
        state: OperState::Active,
        runs: 1,
        life_left_s: None,
        schedule: ScheduleConfig::default(),
        life_start_ns: None,
        url: None,
        lookup: None,
        latest: None,
        history: Vec::new(),
        hours: Vec::new(),
        reactions: Vec::new(),
    };
    View::build(&[row(1, "udp-jitter"), row(2, "icmp-echo"), row(3, "stamp")], true, None)
});

fuzz_target!(|data: &[u8]| {
    // framing as the session does it: the header says how much follows
    let Ok(h) = Header::parse(data) else { return };
    let Some(pdu) = data.get(..HEADER_LEN + h.payload_len as usize) else { return };
    let Ok(m) = agentx::parse(pdu) else { return };
    assert_eq!(m.header, h);
    match &m.pdu {
        Pdu::Response { sys_uptime: _, error, index, varbinds } => {
            let again = agentx::parse(&Emit::reply_to(&h).response(*error, *index, varbinds)).unwrap();
            match again.pdu {
                Pdu::Response { varbinds: v, error: e, index: i, .. } => {
                    assert_eq!((&v, e, i), (varbinds, *error, *index))
                }
                other => panic!("emitted a Response, parsed {other:?}"),
            }
        }
        Pdu::Get(_) | Pdu::GetNext(_) | Pdu::GetBulk { .. } => {
            let vbs = answer(&VIEW, &m.pdu);
            if let Pdu::GetNext(ranges) = &m.pdu {
                assert_eq!(vbs.len(), ranges.len());
                for (vb, r) in vbs.iter().zip(ranges) {
                    if vb.value != Value::EndOfMibView {
                        assert!(vb.name > r.start || (r.include && vb.name == r.start));
                        assert!(r.end.is_null() || vb.name < r.end);
                    }
                }
            }
            // what is answered is emitted and parses back
            let out = Emit::reply_to(&h).response(0, 0, &vbs);
            agentx::parse(&out).unwrap();
        }
        _ => {}
    }
});
