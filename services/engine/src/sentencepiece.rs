//! Just enough of SentencePiece's `ModelProto` (the `tokenizer.model` file) to rebuild
//! the tokenizer: the pieces, their scores and types, and the trainer's model type.
//!
//! Field numbers follow `sentencepiece_model.proto`.

/// A piece's role in the vocabulary (`SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    pub fn from_code(code: u64) -> Self {
        match code {
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => PieceType::Normal,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub text: String,
    pub score: f32,
    pub kind: PieceType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    Unigram,
    Bpe,
    Word,
    Char,
}

#[derive(Debug, Clone)]
pub struct SentencePieceModel {
    pub pieces: Vec<Piece>,
    pub model_type: ModelType,
    pub byte_fallback: bool,
    pub add_dummy_prefix: bool,
}

impl SentencePieceModel {
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut model = SentencePieceModel {
            pieces: Vec::new(),
            model_type: ModelType::Unigram,
            byte_fallback: false,
            add_dummy_prefix: true,
        };
        for field in Fields::new(bytes) {
            match field? {
                (1, Value::Bytes(b)) => model.pieces.push(parse_piece(b)?),
                (2, Value::Bytes(b)) => {
                    for f in Fields::new(b) {
                        match f? {
                            (3, Value::Varint(t)) => {
                                model.model_type = match t {
                                    2 => ModelType::Bpe,
                                    3 => ModelType::Word,
                                    4 => ModelType::Char,
                                    _ => ModelType::Unigram,
                                }
                            }
                            (35, Value::Varint(v)) => model.byte_fallback = v != 0,
                            _ => {}
                        }
                    }
                }
                (3, Value::Bytes(b)) => {
                    for f in Fields::new(b) {
                        if let (3, Value::Varint(v)) = f? {
                            model.add_dummy_prefix = v != 0;
                        }
                    }
                }
                _ => {}
            }
        }
        if model.pieces.is_empty() {
            return Err("no vocabulary pieces (not a SentencePiece model?)".into());
        }
        Ok(model)
    }
}

fn parse_piece(bytes: &[u8]) -> Result<Piece, String> {
    let mut piece = Piece {
        text: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    for field in Fields::new(bytes) {
        match field? {
            (1, Value::Bytes(b)) => {
                piece.text = String::from_utf8(b.to_vec())
                    .map_err(|_| "a piece is not valid UTF-8".to_string())?
            }
            (2, Value::Fixed32(bits)) => piece.score = f32::from_bits(bits),
            (3, Value::Varint(t)) => piece.kind = PieceType::from_code(t),
            _ => {}
        }
    }
    Ok(piece)
}

enum Value<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64,
    Bytes(&'a [u8]),
}

/// Iterates over the top-level fields of one protobuf message.
struct Fields<'a> {
    buf: &'a [u8],
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields { buf, failed: false }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err("truncated field".into());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn field(&mut self) -> Result<(u64, Value<'a>), String> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let len = self.varint()? as usize;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            wire => return Err(format!("unsupported protobuf wire type {wire}")),
        };
        Ok((key >> 3, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() || self.failed {
            return None;
        }
        let item = self.field();
        self.failed = item.is_err();
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(field: u64, data: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    fn piece(text: &str, score: f32, kind: u64) -> Vec<u8> {
        let mut p = Vec::new();
        bytes_field(1, text.as_bytes(), &mut p);
        varint(2 << 3 | 5, &mut p);
        p.extend_from_slice(&score.to_le_bytes());
        varint(3 << 3, &mut p);
        varint(kind, &mut p);
        p
    }

    #[test]
    fn parses_pieces_and_trainer_spec() {
        let mut model = Vec::new();
        bytes_field(1, &piece("<unk>", 0.0, 2), &mut model);
        bytes_field(1, &piece("▁hi", -1.5, 1), &mut model);
        let mut trainer = Vec::new();
        varint(3 << 3, &mut trainer);
        varint(2, &mut trainer);
        varint(35 << 3, &mut trainer);
        varint(1, &mut trainer);
        bytes_field(2, &trainer, &mut model);
        let m = SentencePieceModel::parse(&model).unwrap();
        assert_eq!(m.model_type, ModelType::Bpe);
        assert!(m.byte_fallback);
        assert_eq!(
            m.pieces[1],
            Piece {
                text: "▁hi".into(),
                score: -1.5,
                kind: PieceType::Normal
            }
        );
        assert_eq!(m.pieces[0].kind, PieceType::Unknown);
    }

    #[test]
    fn truncated_input_is_an_error() {
        let mut model = Vec::new();
        bytes_field(1, &piece("abc", 0.0, 1), &mut model);
        model.truncate(model.len() - 3);
        assert!(SentencePieceModel::parse(&model).is_err());
        assert!(SentencePieceModel::parse(b"").is_err());
    }
}
