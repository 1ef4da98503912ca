//! The latest-run tables of the kinds with their own: rttMonLatestHTTPOperTable
//! (CISCO-RTTMON-MIB `rttMonLatestOper 1`) and rttMonLatestIcmpJitterOperTable
//! (CISCO-RTTMON-ICMP-MIB, `rttMonLatestOper 4`: inside the subtree the subagent registers).
//! Both in milliseconds, as the MIBs say; a value the run did not measure has no instance.

use super::{View, display, gauge, sense};
use crate::ops::HttpDetail;
use crate::report::Report;
use ipsla_wire::agentx::Value;

impl View {
    /// rttMonLatestHTTPOperEntry of one http run, from the kind's own part of the document
    /// (`http`: docs/json-schema.md).
    pub(super) fn http_row(&mut self, t: &[u32], id: u32, run: &Report) {
        let d: Option<HttpDetail> = run.detail.get("http").and_then(|v| serde_json::from_value(v.clone()).ok());
        let d = d.unwrap_or_default();
        let ms = |us: Option<f64>| us.map(|us| gauge(us, 1000.0));
        let mut put = |col: u32, v: Option<Value>| {
            if let Some(v) = v {
                self.cell(t, col, id, v);
            }
        };
        // RTT: the whole transaction, the lookup included
        put(1, ms(d.total_us));
        // DNSRTT: IOS says 0 when the URL holds an address; no lookup is no time here
        put(2, ms(d.dns_us));
        put(3, ms(d.connect_us));
        // TransactionRTT: the request written to the body's end (a TLS handshake is in RTT only)
        put(4, ms(d.first_byte_us.zip(d.transfer_us).map(|(a, b)| a + b)));
        put(5, d.body_octets.map(|n| Value::Gauge32(n.min(u64::from(u32::MAX)) as u32)));
        put(6, Some(Value::Integer(sense(run.return_code))));
        put(7, Some(display(run.reason.as_deref().unwrap_or(""))));
    }

    /// rttMonLatestIcmpJitterOperEntry of one icmp-jitter run.
    pub(super) fn icmp_jitter_row(&mut self, t: &[u32], id: u32, run: &Report) {
        let ms = |us: Option<f64>| us.map(|us| gauge(us, 1000.0));
        let count = |n: u64| Some(Value::Gauge32(n.min(u64::from(u32::MAX)) as u32));
        let rtt = &run.rtt_us;
        let mut put = |col: u32, v: Option<Value>| {
            if let Some(v) = v {
                self.cell(t, col, id, v);
            }
        };
        put(1, count(rtt.count));
        put(2, ms(Some(rtt.sum)));
        // sum2 is in µs²: ms² is 10⁶ times less
        put(3, Some(gauge(rtt.sum2, 1e6)));
        put(4, ms(rtt.min));
        put(5, ms(rtt.max));
        // Min, Max, Num, Sum of positives then negatives, SD (6..15) then DS (16..25); the
        // Sum2 columns (10, 15, 20, 25) are absent: not kept per sign
        for (base, j) in [(6, &run.jitter_us.sd), (16, &run.jitter_us.ds)] {
            put(base, ms(j.pos_min));
            put(base + 1, ms(j.pos_max));
            put(base + 2, count(j.pos_count));
            put(base + 3, ms(Some(j.pos_sum)));
            put(base + 5, ms(j.neg_min));
            put(base + 6, ms(j.neg_max));
            put(base + 7, count(j.neg_count));
            put(base + 8, ms(Some(j.neg_sum)));
        }
        let l = &run.loss;
        // PktLoss: every probe lost, whichever way
        put(26, count(u64::from(l.sd) + u64::from(l.ds) + u64::from(l.mia)));
        // out of sequence, both ways (28, 29: per direction, not kept)
        put(27, count(l.out_of_sequence.into()));
        put(31, Some(Value::Integer(sense(run.return_code))));
        put(32, count(l.late.into()));
        if let Some(ow) = &run.one_way_us {
            for (base, d) in [(35, &ow.sd), (39, &ow.ds)] {
                put(base, ms(Some(d.sum)));
                put(base + 1, Some(gauge(d.sum2, 1e6)));
                put(base + 2, ms(d.min));
                put(base + 3, ms(d.max));
            }
            put(43, count(ow.sd.count));
            put(47, ms(ow.sd.avg));
            put(48, ms(ow.ds.avg));
        }
        put(44, ms(run.jitter_us.avg));
        put(45, ms(run.jitter_us.sd.avg));
        put(46, ms(run.jitter_us.ds.avg));
        // IAJOut: at the far end (source to destination); IAJIn: back at the source
        put(49, ms(run.jitter_us.iaj_sd));
        put(50, ms(run.jitter_us.iaj_ds));
    }
}
