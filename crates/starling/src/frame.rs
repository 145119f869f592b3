//! Messages ⇄ WebSocket frames, on the shared codec of `helios-protocol`.

use helios_protocol::{
    Codec, DecodeError, Encoding, FrameType, Message, Notification, ParseMode, Request, RequestId,
};
use serde_json::json;
use tokio_websockets::Message as WsMessage;

use crate::session::CANCEL_TOPIC;

/// Encodes a message into a frame of the encoding's type.
pub(crate) fn encode(encoding: Encoding, msg: &Message) -> Result<WsMessage, String> {
    let bytes = encoding.encode(msg).map_err(|e| e.to_string())?;
    Ok(match encoding.frame_type() {
        FrameType::Text => WsMessage::text(bytes),
        FrameType::Binary => WsMessage::binary(bytes),
    })
}

/// Decodes a data frame. The frame type says the encoding (text is JSON,
/// binary is MessagePack), whatever was negotiated; control frames give
/// `None`. The client is permissive: the server decides names.
pub(crate) fn decode(frame: &WsMessage) -> Option<Result<Message, DecodeError>> {
    let encoding = if frame.is_text() {
        Encoding::Json
    } else if frame.is_binary() {
        Encoding::MsgPack
    } else {
        return None;
    };
    Some(encoding.decode(frame.as_payload(), ParseMode::Permissive))
}

/// The `helios:cancel` notification for a request id.
pub(crate) fn cancel(encoding: Encoding, id: &RequestId) -> Result<WsMessage, String> {
    let note = Notification::new(
        Some(CANCEL_TOPIC.to_owned()),
        json!({ "requestId": id.as_str() }),
    );
    encode(encoding, &Message::Notification(note))
}

/// A request frame, for fire-and-forget calls whose answer nobody awaits.
pub(crate) fn request(
    encoding: Encoding,
    method: &str,
    payload: serde_json::Value,
) -> Result<WsMessage, String> {
    encode(encoding, &Message::Request(Request::new(method, payload)))
}

/// The `helios:ack` notification for a reliable notification's id.
pub(crate) fn ack(encoding: Encoding, ack_id: &str) -> Result<WsMessage, String> {
    let note = Notification::new(
        Some(crate::reliable::ACK_TOPIC.to_owned()),
        json!({ "ackId": ack_id }),
    );
    encode(encoding, &Message::Notification(note))
}
