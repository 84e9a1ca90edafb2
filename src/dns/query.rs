//! One DNS message in, one decision out: an answer built here for app names, or "forward"
//! for everything else. Pure (no sockets), so every rule is unit-tested.

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};

use super::{Directory, DEFAULT_NETWORK};

/// Names under this zone are always answered here, never forwarded.
pub const INTERNAL_ZONE: &str = "haloy.internal";

/// Replicas come and go with deploys: resolvers must not keep an answer.
const ANSWER_TTL: u32 = 0;

/// What to do with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send these bytes back to the asker.
    Answer(Vec<u8>),
    /// Not a name of ours: relay the message to the upstream resolvers as it is.
    Forward,
    /// Not a query (garbage, or a response sent to us): say nothing.
    Ignore,
}

/// What a query name means here.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    /// `<app>` or `<app>.haloy.internal`; `qualified` for the second form.
    App { name: &'a str, qualified: bool },
    /// Something else under haloy.internal (never leaves this server).
    Internal,
    /// A name of the outside world.
    Outside,
}

fn target(name: &str) -> Target<'_> {
    if name == INTERNAL_ZONE {
        return Target::Internal;
    }
    if let Some(label) = name
        .strip_suffix(INTERNAL_ZONE)
        .and_then(|rest| rest.strip_suffix('.'))
    {
        return if label.is_empty() || label.contains('.') {
            Target::Internal
        } else {
            Target::App {
                name: label,
                qualified: true,
            }
        };
    }
    if !name.is_empty() && !name.contains('.') {
        Target::App {
            name,
            qualified: false,
        }
    } else {
        Target::Outside
    }
}

/// Decides `request` from `source` against `directory`. `max_len` is what the transport
/// carries (512 for plain UDP); a longer answer goes out truncated, so the asker retries
/// over TCP. `rotation` rotates the addresses so askers spread over the replicas.
pub fn decide(
    request: &[u8],
    source: IpAddr,
    directory: &dyn Directory,
    max_len: usize,
    rotation: usize,
) -> Decision {
    let Ok(message) = Message::from_vec(request) else {
        return Decision::Ignore;
    };
    if message.message_type() != MessageType::Query {
        return Decision::Ignore;
    }
    if message.op_code() != OpCode::Query {
        return error_reply(&message, ResponseCode::NotImp);
    }
    let [query] = message.queries() else {
        return error_reply(&message, ResponseCode::FormErr);
    };
    let lowered = query.name().to_lowercase().to_ascii();
    let name = lowered.strip_suffix('.').unwrap_or(&lowered);
    let (app, qualified) = match target(name) {
        Target::Outside => return Decision::Forward,
        Target::Internal => return error_reply(&message, ResponseCode::NXDomain),
        Target::App { name, qualified } => (name, qualified),
    };
    let network = directory
        .network_of(source)
        .unwrap_or_else(|| DEFAULT_NETWORK.to_string());
    match directory.addresses(app, &network) {
        Some(addresses) if !addresses.is_empty() => {
            answer(&message, query, addresses, max_len, rotation)
        }
        Some(_) => error_reply(&message, ResponseCode::NXDomain),
        // Not an app this asker may see: the outside world may still know a bare name.
        None if qualified => error_reply(&message, ResponseCode::NXDomain),
        None => Decision::Forward,
    }
}

/// SERVFAIL for `request` (no upstream answered); None when it is no query at all.
pub fn server_failure(request: &[u8]) -> Option<Vec<u8>> {
    let message = Message::from_vec(request).ok()?;
    match error_reply(&message, ResponseCode::ServFail) {
        Decision::Answer(bytes) => Some(bytes),
        _ => None,
    }
}

fn reply_to(request: &Message, code: ResponseCode) -> Message {
    let mut reply = Message::new();
    reply
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code);
    reply
}

fn error_reply(request: &Message, code: ResponseCode) -> Decision {
    let mut reply = reply_to(request, code);
    reply.add_queries(request.queries().iter().cloned());
    encode(&reply)
}

fn answer(
    request: &Message,
    query: &Query,
    mut addresses: Vec<IpAddr>,
    max_len: usize,
    rotation: usize,
) -> Decision {
    let mut reply = reply_to(request, ResponseCode::NoError);
    reply.set_authoritative(true);
    reply.add_query(query.clone());
    if !addresses.is_empty() {
        let by = rotation % addresses.len();
        addresses.rotate_left(by);
    }
    let wanted = query.query_type();
    for ip in addresses {
        let rdata = match (ip, wanted) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
            // The name exists, the type has no data: NOERROR with no answer.
            _ => continue,
        };
        reply.add_answer(Record::from_rdata(query.name().clone(), ANSWER_TTL, rdata));
    }
    match reply.to_vec() {
        Ok(bytes) if bytes.len() <= max_len => Decision::Answer(bytes),
        Ok(_) => {
            reply.take_answers();
            reply.set_truncated(true);
            encode(&reply)
        }
        Err(_) => error_reply(request, ResponseCode::ServFail),
    }
}

fn encode(reply: &Message) -> Decision {
    match reply.to_vec() {
        Ok(bytes) => Decision::Answer(bytes),
        Err(_) => Decision::Ignore,
    }
}

#[cfg(test)]
#[path = "tests/query.rs"]
mod tests;
