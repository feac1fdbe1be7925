//! How values and operations read in a violation's explanation.

use crate::history::{Op, Operation, Outcome};

/// A value as text: `absent`, a quoted string if it is printable UTF-8, else hex.
pub(crate) fn describe_value(value: Option<&[u8]>) -> String {
    match value {
        None => "absent".to_owned(),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) if !text.chars().any(char::is_control) => format!("{text:?}"),
            _ => {
                let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
                format!("0x{hex}")
            }
        },
    }
}

fn value(value: &Option<Vec<u8>>) -> String {
    describe_value(value.as_deref())
}

/// An operation on one line: client, operation, outcome, call and return times.
pub(crate) fn describe_op(operation: &Operation) -> String {
    let op = match &operation.op {
        Op::Set { value: v } => format!("set {}", describe_value(Some(v))),
        Op::Get => "get".to_owned(),
        Op::Delete => "delete".to_owned(),
        Op::Cas { expected, new } => format!("cas {} -> {}", value(expected), value(new)),
    };
    let outcome = match &operation.outcome {
        Outcome::SetOk { created } => format!("ok, created: {created}"),
        Outcome::GetOk(v) => value(v),
        Outcome::DeleteOk { existed } => format!("ok, existed: {existed}"),
        Outcome::CasOk { succeeded, current } => {
            format!("{}, now {}", if *succeeded { "succeeded" } else { "failed" }, value(current))
        }
        Outcome::Failed => "failed".to_owned(),
        Outcome::Unknown => "unknown".to_owned(),
    };
    let ret = operation.ret.map_or_else(|| "never".to_owned(), time);
    format!(
        "client {} {op} => {outcome}  (key {:?}, called {}, returned {ret})",
        operation.client,
        operation.key,
        time(operation.call)
    )
}

/// Nanoseconds since the start, as milliseconds.
fn time(nanos: u64) -> String {
    format!("{}.{:06}ms", nanos / 1_000_000, nanos % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_text_or_hex() {
        assert_eq!(describe_value(None), "absent");
        assert_eq!(describe_value(Some(b"ab")), "\"ab\"");
        assert_eq!(describe_value(Some(&[0, 255])), "0x00ff");
    }

    #[test]
    fn operations_read_on_one_line() {
        let op = Operation {
            client: 2,
            key: "x".into(),
            op: Op::Get,
            call: 1_500_000,
            ret: Some(2_000_001),
            outcome: Outcome::GetOk(Some(b"1".to_vec())),
        };
        assert_eq!(
            describe_op(&op),
            "client 2 get => \"1\"  (key \"x\", called 1.500000ms, returned 2.000001ms)"
        );
    }
}
