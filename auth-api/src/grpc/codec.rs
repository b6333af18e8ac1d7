//! The codec of `auth.v1`: prost's, except that a message that does not decode (truncated, a
//! string that is not UTF-8, a wrong wire type) is the client's mistake, answered as HTTP answers a
//! malformed body: `INVALID_ARGUMENT` with ErrorInfo `invalid_request`, no decoder detail. prost's
//! own codec answers `INTERNAL` with the decoder's text, which would let any caller raise what
//! operators alert on as a server fault.

use std::marker::PhantomData;

use tonic::{
    codec::{BufferSettings, DecodeBuf, Decoder},
    Status,
};
use tonic_prost::{ProstCodec, ProstDecoder};

use crate::error::ApiError;

/// [`ProstCodec`] with [`MalformedIsInvalid`] decoding; `build.rs` names it as the codec of the
/// generated services.
#[derive(Debug)]
pub struct Codec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self {
            inner: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec<T, U> {
    /// What the generated code calls when a service sets buffer sizes.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as tonic::codec::Codec>::Encoder;
    type Decoder = MalformedIsInvalid<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        MalformedIsInvalid {
            inner: self.inner.decoder(),
            _message: PhantomData,
        }
    }
}

/// prost's decoder, its errors answered as `invalid_request`.
#[derive(Debug)]
pub struct MalformedIsInvalid<U> {
    inner: ProstDecoder<U>,
    _message: PhantomData<U>,
}

impl<U: prost::Message + Default> Decoder for MalformedIsInvalid<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|_| {
            ApiError::InvalidRequest("the message does not decode as its protobuf type".to_owned())
                .into()
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}
