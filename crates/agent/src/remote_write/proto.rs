//! The messages of Prometheus remote write 1.0 (`prometheus/prompb/remote.proto` and
//! `types.proto`), only the fields a sender of samples fills. Field numbers are the spec's; the
//! receiver ignores the ones we leave out (metadata, exemplars, histograms).

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// Field 1.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: labels sorted by name, samples in timestamp order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Field 1.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Field 2.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, prost::Message)]
pub struct Label {
    /// Field 1.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Field 2.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Field 1.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Field 2: ms since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// The request body: the message's protobuf bytes in snappy's raw block format (the spec's
/// `Content-Encoding: snappy`, not the framed stream format).
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    use prost::Message;
    let raw = req.encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&raw).unwrap_or_default()
}

/// The message of a request body (a receiver's side: the tests).
pub fn decode(body: &[u8]) -> Option<WriteRequest> {
    use prost::Message;
    let raw = snap::raw::Decoder::new().decompress_vec(body).ok()?;
    WriteRequest::decode(raw.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_of_one_series_with_one_sample() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label { name: "__name__".into(), value: "up".into() }],
                samples: vec![Sample { value: 1.0, timestamp: 1000 }],
            }],
        };
        use prost::Message;
        // hand-encoded: field 1 (len 30) { field 1 (len 14) { "__name__", "up" },
        // field 2 (len 12) { double 1.0, varint 1000 (2 bytes) } }
        let expected = [
            &[0x0a, 30, 0x0a, 14, 0x0a, 8][..],
            b"__name__",
            &[0x12, 2],
            b"up",
            &[0x12, 12, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0xe8, 0x07],
        ]
        .concat();
        assert_eq!(req.encode_to_vec(), expected);
        let body = encode(&req);
        assert_eq!(snap::raw::Decoder::new().decompress_vec(&body).unwrap(), expected, "raw snappy block");
        assert_eq!(decode(&body), Some(req));
    }
}
