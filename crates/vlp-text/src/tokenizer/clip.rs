//! OpenAI CLIP's byte-level BPE, built in, reproducing open_clip's `SimpleTokenizer`.

use std::collections::HashMap;
use std::io::Read;
use std::sync::OnceLock;

use regex::Regex;
use tokenizers::Model;
use tokenizers::models::bpe::BPE;

use super::clean::clean_lower;
use super::{Encoding, Tokenizer};

/// The CLIP merges (OpenAI's `bpe_simple_vocab_16e6.txt`, MIT), gzip-compressed.
static MERGES_GZ: &[u8] = include_bytes!("../../assets/clip_bpe_merges.txt.gz");

/// Id of `<|startoftext|>`.
pub const SOT: u32 = 49406;
/// Id of `<|endoftext|>`.
pub const EOT: u32 = 49407;

/// How sequences shorter than the context are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// With id 0, as open_clip does (the model pools at the argmax id, the end token).
    #[default]
    Zero,
    /// With the end token, as transformers' CLIP tokenizer does; pair it with the attention mask.
    Eot,
}

struct Shared {
    bpe: BPE,
    decoder: Vec<String>,
    byte_decoder: HashMap<char, u8>,
    byte_encoder: [char; 256],
    split: Regex,
}

/// GPT-2's reversible map from bytes to printable characters, in open_clip's insertion order
/// (printable bytes first), which is also the order of the first 256 vocabulary entries.
fn bytes_to_unicode() -> Vec<(u8, char)> {
    let mut bs: Vec<u32> = ('!' as u32..='~' as u32)
        .chain('¡' as u32..='¬' as u32)
        .chain('®' as u32..='ÿ' as u32)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .map(|(b, c)| (b as u8, char::from_u32(c).expect("valid code point")))
        .collect()
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let mut text = String::new();
        flate2::read::GzDecoder::new(MERGES_GZ).read_to_string(&mut text).expect("the built-in merges decompress");
        // open_clip: merges[1:49152-256-2+1] (skip the version line, keep 48894 merges).
        let merges: Vec<(String, String)> = text
            .lines()
            .skip(1)
            .take(49152 - 256 - 2)
            .map(|l| {
                let (a, b) = l.split_once(' ').expect("a merge is two symbols");
                (a.to_string(), b.to_string())
            })
            .collect();
        let pairs = bytes_to_unicode();
        // Vocabulary order of open_clip: bytes, bytes + </w>, merges, then the two specials.
        let mut vocab: Vec<String> = pairs.iter().map(|(_, c)| c.to_string()).collect();
        vocab.extend(pairs.iter().map(|(_, c)| format!("{c}</w>")));
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push("<|startoftext|>".into());
        vocab.push("<|endoftext|>".into());
        let map: tokenizers::models::bpe::Vocab = vocab.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(map, merges)
            .end_of_word_suffix("</w>".into())
            .build()
            .expect("the built-in BPE is consistent");
        let byte_decoder = pairs.iter().map(|(b, c)| (*c, *b)).collect();
        let mut byte_encoder = ['\0'; 256];
        for (b, c) in &pairs {
            byte_encoder[*b as usize] = *c;
        }
        // open_clip's pattern (with its special-token names first), on already-lowercased text.
        let split = Regex::new(r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")
            .expect("valid pattern");
        Shared { bpe, decoder: vocab, byte_decoder, byte_encoder, split }
    })
}

/// The CLIP tokenizer, with its vocabulary built into the crate.
///
/// `ClipTokenizer::default()` gives open_clip's behaviour (77 tokens, padded with 0);
/// [`ClipTokenizer::hf`] gives transformers' (padded with the end token). Both truncate to the
/// start token, the first `context_length - 2` text tokens and the end token.
#[derive(Debug, Clone, Copy)]
pub struct ClipTokenizer {
    context_length: usize,
    padding: Padding,
}

impl Default for ClipTokenizer {
    fn default() -> Self {
        Self::new(77, Padding::Zero)
    }
}

impl ClipTokenizer {
    /// A tokenizer padding to `context_length` (≥ 2) in the given style.
    pub fn new(context_length: usize, padding: Padding) -> Self {
        assert!(
            context_length >= 2,
            "CLIP tokenizer: context length {context_length} cannot hold start and end tokens"
        );
        Self {
            context_length,
            padding,
        }
    }

    /// transformers' layout: 77 tokens padded with the end token, with an attention mask.
    pub fn hf() -> Self {
        Self::new(77, Padding::Eot)
    }

    /// BPE ids of `text` without start/end tokens, truncation or padding (open_clip `encode`).
    pub fn encode_raw(&self, text: &str) -> Vec<u32> {
        let s = shared();
        let cleaned = clean_lower(text);
        let mut out = Vec::new();
        for m in s.split.find_iter(&cleaned) {
            match m.as_str() {
                // open_clip's specials live in its BPE cache and map to themselves.
                "<start_of_text>" => out.push(SOT),
                "<end_of_text>" => out.push(EOT),
                piece => {
                    let mapped: String =
                        piece.bytes().map(|b| s.byte_encoder[b as usize]).collect();
                    let tokens = s
                        .bpe
                        .tokenize(&mapped)
                        .expect("byte-level input is always in the vocabulary");
                    out.extend(tokens.into_iter().map(|t| t.id));
                }
            }
        }
        out
    }

    /// The vocabulary entry of `id` (byte-level characters, `</w>` marking a word end).
    pub fn token(&self, id: u32) -> Option<&'static str> {
        shared().decoder.get(id as usize).map(String::as_str)
    }

    /// Text of `ids` as open_clip's `decode` gives it (`</w>` becomes a space), specials and
    /// padding removed.
    pub fn decode_ids(&self, ids: &[u32]) -> String {
        let s = shared();
        let mut bytes = Vec::new();
        for &id in ids {
            if id == SOT || id == EOT || id == 0 && self.padding == Padding::Zero {
                continue;
            }
            if let Some(tok) = s.decoder.get(id as usize) {
                for c in tok.replace("</w>", " ").chars() {
                    match s.byte_decoder.get(&c) {
                        Some(b) => bytes.push(*b),
                        None => bytes.extend(c.to_string().bytes()),
                    }
                }
            }
        }
        String::from_utf8_lossy(&bytes).trim_end().to_string()
    }
}

impl Tokenizer for ClipTokenizer {
    fn encode(&self, text: &str) -> crate::Result<Encoding> {
        let mut ids = Vec::with_capacity(self.context_length);
        ids.push(SOT);
        ids.extend(self.encode_raw(text));
        ids.push(EOT);
        if ids.len() > self.context_length {
            ids.truncate(self.context_length);
            ids[self.context_length - 1] = EOT;
        }
        let real = ids.len();
        let pad = match self.padding {
            Padding::Zero => 0,
            Padding::Eot => EOT,
        };
        ids.resize(self.context_length, pad);
        let attention_mask = (0..self.context_length)
            .map(|i| u32::from(i < real))
            .collect();
        Ok(Encoding {
            ids,
            attention_mask,
        })
    }

    fn decode(&self, ids: &[u32]) -> String {
        self.decode_ids(ids)
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn vocab_size(&self) -> usize {
        shared().decoder.len()
    }
}
