//! CTranslate2 Whisper (`model.bin` + `vocabulary.txt`) -> whisper.cpp's ggml file.
//!
//! The bundled Whisper weights ship in CTranslate2's format (what faster-whisper loads);
//! whisper.cpp (our engine, through whisper-rs) reads only its own ggml layout. The weights
//! are the same numbers under other names, so the conversion copies them unchanged (f16 stays
//! f16, bit for bit), and only:
//! - splits CTranslate2's fused attention projections (self-attention `linear_0` holds
//!   query, key and value; cross-attention `linear_1` holds key and value) and drops the key
//!   bias, which Whisper does not have (CTranslate2 stores zeros there; anything else is
//!   refused rather than silently lost);
//! - widens the tensors whisper.cpp keeps in f32 (1-D tensors, conv biases reshaped to
//!   `[n, 1]`, positional embeddings), exactly as whisper.cpp's `convert-pt-to-ggml.py`;
//! - computes the mel filterbank (librosa's Slaney-style filters, what OpenAI's
//!   `mel_filters.npz` holds) and turns the byte-level BPE vocabulary back into raw bytes.
//!
//! With [`Weights::Q8_0`] the big matrices (every 2-D weight whisper.cpp multiplies by:
//! attention and MLP projections, the token embedding) are written in ggml's Q8_0 instead:
//! blocks of 32 values as one f16 scale and 32 signed bytes, the format and rounding of
//! ggml's `quantize_row_q8_0_ref` and the tensor choice of whisper.cpp's own `quantize`
//! tool (convolutions stay f16; biases, norms and positional embeddings f32). It halves the
//! file and lets whisper.cpp's integer dot products run on CPU (faster-whisper's int8 is
//! the same idea in CTranslate2).
//!
//! CTranslate2 file (binary version 6): `u32 version`, string spec name, `u32 revision`,
//! `u32 count`, then per variable: string name, `u8 rank`, `u32` dims, `u8 dtype`,
//! `u32 byte size`, data; then `u32` alias count and (alias, target) string pairs.
//! Strings are `u16 length` (including a NUL terminator) + bytes.
//!
//! ggml Whisper file: magic `ggml`, eleven `i32` hyper-parameters, the filterbank
//! (`i32 n_mels, i32 n_freq`, f32 values), the vocabulary (`i32 count`, then `u32 length` +
//! bytes each), then per tensor `i32 n_dims, i32 name length, i32 type (0 f32, 1 f16)`, the
//! dims innermost first, the name and the data.

use std::{
    collections::HashMap,
    fs,
    io::{BufWriter, Write},
    path::Path,
};

/// CTranslate2 data type ids (`ctranslate2::DataType`).
const CT2_F32: u8 = 0;
const CT2_I8: u8 = 1;
const CT2_I16: u8 = 2;
const CT2_F16: u8 = 4;

/// whisper.cpp / ggml tensor types.
const GGML_F32: i32 = 0;
const GGML_F16: i32 = 1;
const GGML_Q8_0: i32 = 8;
/// The file's weight type for a Q8_0 model: `GGML_FTYPE_MOSTLY_Q8_0` (7) with ggml's
/// quantization version (2) times its factor (1000), as whisper.cpp's `quantize` writes it.
const FTYPE_Q8_0: i32 = 2 * 1000 + 7;
/// Values per Q8_0 block.
const Q8_0_BLOCK: usize = 32;

/// How the converted file stores the big weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// As CTranslate2 stored them (f16 in every published faster-whisper model), bit for bit.
    AsStored,
    /// ggml's Q8_0 (8-bit, one f16 scale per 32 values).
    Q8_0,
}

/// Whisper's audio front end: 16 kHz, 25 ms windows (n_fft 400) -> 201 frequency bins.
const SAMPLE_RATE: f64 = 16_000.0;
const N_FFT: usize = 400;

/// Converts `input` (a CTranslate2 `model.bin`, with `vocabulary.txt` beside it) into a
/// whisper.cpp ggml model at `output`.
pub fn convert(input: &Path, output: &Path, weights: Weights) -> Result<(), String> {
    let bytes = fs::read(input).map_err(|e| format!("reading {}: {e}", input.display()))?;
    let vocab_path = input.with_file_name("vocabulary.txt");
    let vocab_text = fs::read_to_string(&vocab_path).map_err(|e| format!("reading {} (needed beside the model): {e}", vocab_path.display()))?;
    let file = fs::File::create(output).map_err(|e| format!("creating {}: {e}", output.display()))?;
    let mut out = BufWriter::new(file);
    convert_bytes(&bytes, &vocab_text, weights, &mut out).map_err(|e| format!("{}: {e}", input.display()))?;
    out.flush().map_err(|e| format!("writing {}: {e}", output.display()))
}

/// [`convert`] in memory: the bytes of a CTranslate2 `model.bin` and the text of its
/// `vocabulary.txt`, written to `out` as a whisper.cpp ggml model. (The fuzz target
/// `ct2_convert` feeds it arbitrary bytes: it must refuse, never panic or over-allocate.)
pub fn convert_bytes(model: &[u8], vocabulary: &str, weights: Weights, out: &mut impl Write) -> Result<(), String> {
    let model = Ct2Model::parse(model)?;
    if model.spec != "WhisperSpec" {
        return Err(format!("the file holds a CTranslate2 `{}`, not a `WhisperSpec`", model.spec));
    }
    let vocab: Vec<&str> = vocabulary.lines().collect();
    write_ggml(&model, &vocab, weights, out)
}

/// One CTranslate2 variable, borrowing its data from the file bytes.
struct Variable<'a> {
    dims: Vec<usize>,
    dtype: u8,
    data: &'a [u8],
}

/// A parsed CTranslate2 model: spec name and variables by name (aliases resolved).
struct Ct2Model<'a> {
    spec: String,
    variables: HashMap<String, Variable<'a>>,
}

/// Little-endian reader over the file bytes with errors that say what was being read.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated file: {what} at byte {} needs {n} bytes", self.pos))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        let len = self.u16(what)? as usize;
        let raw = self.take(len, what)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }
}

impl<'a> Ct2Model<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u32("binary version")?;
        if version != 6 {
            return Err(format!("CTranslate2 binary version {version} (only version 6 is supported)"));
        }
        let spec = r.string("spec name")?;
        let _revision = r.u32("spec revision")?;
        let count = r.u32("variable count")?;
        // The count is the file's claim: reserve no more than its bytes could describe
        // (each variable takes at least 9 bytes).
        let mut variables = HashMap::with_capacity((count as usize).min(bytes.len() / 9));
        for _ in 0..count {
            let name = r.string("variable name")?;
            let rank = r.u8("rank")? as usize;
            let dims = (0..rank).map(|_| r.u32("dimension").map(|d| d as usize)).collect::<Result<Vec<_>, _>>()?;
            let dtype = r.u8("dtype")?;
            let size = r.u32("byte size")? as usize;
            let data = r.take(size, &name)?;
            variables.insert(name, Variable { dims, dtype, data });
        }
        let aliases = r.u32("alias count")?;
        for _ in 0..aliases {
            let alias = r.string("alias")?;
            let target = r.string("alias target")?;
            if let Some(v) = variables.get(&target) {
                let v = Variable { dims: v.dims.clone(), dtype: v.dtype, data: v.data };
                variables.insert(alias, v);
            }
        }
        if r.pos != bytes.len() {
            return Err(format!("{} trailing bytes after the aliases", bytes.len() - r.pos));
        }
        Ok(Self { spec, variables })
    }

    fn get(&self, name: &str) -> Result<&Variable<'a>, String> {
        self.variables.get(name).ok_or_else(|| format!("variable `{name}` missing"))
    }

    /// A scalar integer attribute (CTranslate2 stores e.g. `num_heads` as an int16 variable).
    fn int(&self, name: &str) -> Result<usize, String> {
        let v = self.get(name)?;
        match (v.dtype, v.data.len()) {
            (CT2_I8, 1) => Ok(v.data[0] as usize),
            (CT2_I16, 2) => Ok(u16::from_le_bytes([v.data[0], v.data[1]]) as usize),
            (CT2_F32, 4) | (3, 4) => Ok(u32::from_le_bytes(v.data.try_into().unwrap()) as usize),
            _ => Err(format!("`{name}` is not an integer scalar")),
        }
    }

    fn layers(&self, stack: &str) -> usize {
        (0..).take_while(|i| self.variables.contains_key(&format!("{stack}/layer_{i}/ffn/linear_0/weight"))).count()
    }
}

/// Whisper's hyper-parameters, in whisper.cpp's header order.
struct HyperParams {
    n_vocab: usize,
    n_audio_ctx: usize,
    n_audio_state: usize,
    n_audio_head: usize,
    n_audio_layer: usize,
    n_text_ctx: usize,
    n_text_state: usize,
    n_text_head: usize,
    n_text_layer: usize,
    n_mels: usize,
}

/// Where a ggml tensor's data comes from: a CTranslate2 variable, or a block of its rows
/// (`part` of `parts` equal blocks: one projection out of a fused one).
struct Source {
    variable: String,
    part: usize,
    parts: usize,
}

fn whole(variable: impl Into<String>) -> Source {
    Source { variable: variable.into(), part: 0, parts: 1 }
}

fn write_ggml(model: &Ct2Model<'_>, vocab: &[&str], weights: Weights, out: &mut impl Write) -> Result<(), String> {
    let (pe_enc, pe_dec) = (model.get("encoder/position_encodings/encodings")?, model.get("decoder/position_encodings/encodings")?);
    let conv1 = model.get("encoder/conv1/weight")?;
    if pe_enc.dims.len() != 2 || pe_dec.dims.len() != 2 || conv1.dims.len() != 3 {
        return Err("unexpected shapes for the position encodings or conv1".into());
    }
    let hp = HyperParams {
        n_vocab: vocab.len(),
        n_audio_ctx: pe_enc.dims[0],
        n_audio_state: pe_enc.dims[1],
        n_audio_head: model.int("encoder/num_heads")?,
        n_audio_layer: model.layers("encoder"),
        n_text_ctx: pe_dec.dims[0],
        n_text_state: pe_dec.dims[1],
        n_text_head: model.int("decoder/num_heads")?,
        n_text_layer: model.layers("decoder"),
        n_mels: conv1.dims[1],
    };
    // Weights stay in their stored precision: f16 (every published faster-whisper model)
    // or f32. Quantized CTranslate2 models (int8 + scales) cannot be copied as they are.
    let weights_f16 = match conv1.dtype {
        CT2_F16 => true,
        CT2_F32 => false,
        other => return Err(format!("weights of CTranslate2 type {other} (quantized?): only float16/float32 models convert")),
    };

    let w = |out: &mut dyn Write, v: i32| out.write_all(&v.to_le_bytes()).map_err(|e| e.to_string());
    out.write_all(&0x6767_6d6c_u32.to_le_bytes()).map_err(|e| e.to_string())?;
    for v in [
        hp.n_vocab,
        hp.n_audio_ctx,
        hp.n_audio_state,
        hp.n_audio_head,
        hp.n_audio_layer,
        hp.n_text_ctx,
        hp.n_text_state,
        hp.n_text_head,
        hp.n_text_layer,
        hp.n_mels,
    ] {
        w(out, v as i32)?;
    }
    let ftype = match weights {
        Weights::Q8_0 => FTYPE_Q8_0,
        Weights::AsStored if weights_f16 => GGML_F16,
        Weights::AsStored => GGML_F32,
    };
    w(out, ftype)?;

    let filters = mel_filterbank(hp.n_mels);
    w(out, hp.n_mels as i32)?;
    w(out, (N_FFT / 2 + 1) as i32)?;
    for f in &filters {
        out.write_all(&f.to_le_bytes()).map_err(|e| e.to_string())?;
    }

    // The text tokens: everything before the first special token. whisper.cpp names the
    // special tokens itself from `n_vocab` (English-only vs multilingual ids).
    let n_text = vocab.iter().position(|t| *t == "<|endoftext|>").ok_or("vocabulary.txt has no <|endoftext|>")?;
    let decode = byte_decoder();
    w(out, n_text as i32)?;
    for token in &vocab[..n_text] {
        let bytes = token
            .chars()
            .map(|c| decode.get(&c).copied().ok_or_else(|| format!("token {token:?} is not byte-level BPE")))
            .collect::<Result<Vec<u8>, _>>()?;
        out.write_all(&(bytes.len() as u32).to_le_bytes()).map_err(|e| e.to_string())?;
        out.write_all(&bytes).map_err(|e| e.to_string())?;
    }

    for (name, source) in tensor_map(&hp) {
        write_tensor(model, &name, &source, weights_f16, weights, out)?;
    }
    Ok(())
}

/// Every whisper.cpp tensor and where it comes from, in the order OpenAI's checkpoint
/// (and so the official ggml files) lists them.
fn tensor_map(hp: &HyperParams) -> Vec<(String, Source)> {
    let mut t: Vec<(String, Source)> = Vec::new();
    let linear = |t: &mut Vec<(String, Source)>, ggml: &str, ct2: &str, part: usize, parts: usize, bias: bool| {
        t.push((format!("{ggml}.weight"), Source { variable: format!("{ct2}/weight"), part, parts }));
        if bias {
            t.push((format!("{ggml}.bias"), Source { variable: format!("{ct2}/bias"), part, parts }));
        }
    };
    let norm = |t: &mut Vec<(String, Source)>, ggml: &str, ct2: &str| {
        t.push((format!("{ggml}.weight"), whole(format!("{ct2}/gamma"))));
        t.push((format!("{ggml}.bias"), whole(format!("{ct2}/beta"))));
    };

    t.push(("decoder.positional_embedding".into(), whole("decoder/position_encodings/encodings")));
    t.push(("encoder.positional_embedding".into(), whole("encoder/position_encodings/encodings")));
    for conv in ["conv1", "conv2"] {
        linear(&mut t, &format!("encoder.{conv}"), &format!("encoder/{conv}"), 0, 1, true);
    }
    // A transformer block: self-attention (fused q,k,v), cross-attention in the decoder
    // (query, then fused k,v), MLP; each with its pre-norm.
    let block = |t: &mut Vec<(String, Source)>, g: &str, c: &str, cross: bool| {
        let sa = format!("{c}/self_attention");
        linear(t, &format!("{g}.attn.query"), &format!("{sa}/linear_0"), 0, 3, true);
        linear(t, &format!("{g}.attn.key"), &format!("{sa}/linear_0"), 1, 3, false);
        linear(t, &format!("{g}.attn.value"), &format!("{sa}/linear_0"), 2, 3, true);
        linear(t, &format!("{g}.attn.out"), &format!("{sa}/linear_1"), 0, 1, true);
        norm(t, &format!("{g}.attn_ln"), &format!("{sa}/layer_norm"));
        if cross {
            let ca = format!("{c}/attention");
            linear(t, &format!("{g}.cross_attn.query"), &format!("{ca}/linear_0"), 0, 1, true);
            linear(t, &format!("{g}.cross_attn.key"), &format!("{ca}/linear_1"), 0, 2, false);
            linear(t, &format!("{g}.cross_attn.value"), &format!("{ca}/linear_1"), 1, 2, true);
            linear(t, &format!("{g}.cross_attn.out"), &format!("{ca}/linear_2"), 0, 1, true);
            norm(t, &format!("{g}.cross_attn_ln"), &format!("{ca}/layer_norm"));
        }
        linear(t, &format!("{g}.mlp.0"), &format!("{c}/ffn/linear_0"), 0, 1, true);
        linear(t, &format!("{g}.mlp.2"), &format!("{c}/ffn/linear_1"), 0, 1, true);
        norm(t, &format!("{g}.mlp_ln"), &format!("{c}/ffn/layer_norm"));
    };
    for i in 0..hp.n_audio_layer {
        block(&mut t, &format!("encoder.blocks.{i}"), &format!("encoder/layer_{i}"), false);
    }
    norm(&mut t, "encoder.ln_post", "encoder/layer_norm");
    t.push(("decoder.token_embedding.weight".into(), whole("decoder/embeddings/weight")));
    for i in 0..hp.n_text_layer {
        block(&mut t, &format!("decoder.blocks.{i}"), &format!("decoder/layer_{i}"), true);
    }
    norm(&mut t, "decoder.ln", "decoder/layer_norm");
    t
}

/// Writes one tensor: its slice of the source rows, in f16 or widened to f32 by the rules
/// of whisper.cpp's own converter, or a weight matrix in Q8_0.
fn write_tensor(model: &Ct2Model<'_>, name: &str, source: &Source, weights_f16: bool, weights: Weights, out: &mut impl Write) -> Result<(), String> {
    let v = model.get(&source.variable)?;
    let elem = match v.dtype {
        CT2_F16 => 2,
        CT2_F32 => 4,
        other => return Err(format!("`{}` has CTranslate2 type {other}; expected float16/float32", source.variable)),
    };
    let rows = *v.dims.first().ok_or_else(|| format!("`{}` is a scalar", source.variable))?;
    if rows % source.parts != 0 {
        return Err(format!("`{}` has {rows} rows, not divisible into {} projections", source.variable, source.parts));
    }
    let row_bytes = v.data.len() / rows;
    let block = rows / source.parts;
    let data = &v.data[source.part * block * row_bytes..(source.part + 1) * block * row_bytes];
    let mut dims: Vec<usize> = v.dims.clone();
    dims[0] = block;
    if name == "encoder.conv1.bias" || name == "encoder.conv2.bias" {
        dims = vec![dims[0], 1];
    }
    // The key projections carry no bias in Whisper; make sure nothing is dropped but zeros.
    if source.parts > 1 && source.part == 0 && name.ends_with(".query.weight") {
        check_zero_key_bias(model, source)?;
    }
    if source.parts == 2 && name.ends_with(".key.weight") {
        check_zero_key_bias(model, source)?;
    }
    let keep_f32 = dims.len() < 2
        || matches!(name, "encoder.conv1.bias" | "encoder.conv2.bias" | "encoder.positional_embedding" | "decoder.positional_embedding");
    // whisper.cpp makes every 2-D weight but those four of the file's weight type.
    let quantize = weights == Weights::Q8_0 && dims.len() == 2 && !keep_f32;
    if quantize && !dims[1].is_multiple_of(Q8_0_BLOCK) {
        return Err(format!("`{name}` rows of {} values do not split into blocks of {Q8_0_BLOCK}", dims[1]));
    }
    let to_f16 = weights_f16 && !keep_f32;
    let name_bytes = name.as_bytes();
    let ttype = if quantize {
        GGML_Q8_0
    } else if to_f16 {
        GGML_F16
    } else {
        GGML_F32
    };
    let header = [dims.len() as i32, name_bytes.len() as i32, ttype];
    let io = |e: std::io::Error| e.to_string();
    for h in header {
        out.write_all(&h.to_le_bytes()).map_err(io)?;
    }
    for d in dims.iter().rev() {
        out.write_all(&(*d as i32).to_le_bytes()).map_err(io)?;
    }
    out.write_all(name_bytes).map_err(io)?;
    if quantize {
        let values: Vec<f32> = match elem {
            2 => data.chunks_exact(2).map(|h| half::f16::from_le_bytes([h[0], h[1]]).to_f32()).collect(),
            _ => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        };
        return out.write_all(&quantize_q8_0(&values)).map_err(io);
    }
    match (elem, to_f16) {
        (2, true) | (4, false) => out.write_all(data).map_err(io),
        (2, false) => {
            let mut buf = Vec::with_capacity(data.len() * 2);
            for h in data.chunks_exact(2) {
                buf.extend_from_slice(&half::f16::from_le_bytes([h[0], h[1]]).to_f32().to_le_bytes());
            }
            out.write_all(&buf).map_err(io)
        }
        _ => Err(format!("`{name}`: a float32 tensor in a float16 model")),
    }
}

/// ggml's Q8_0 of `values` (a multiple of 32): per block of 32, the scale
/// `d = max|x| / 127` as f16, then each `round(x / d)` as a signed byte (the scale used to
/// divide is the f32 one, as in ggml's `quantize_row_q8_0_ref`).
pub fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / Q8_0_BLOCK * (2 + Q8_0_BLOCK));
    for block in values.chunks_exact(Q8_0_BLOCK) {
        let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|x| (x * id).round() as i8 as u8));
    }
    out
}

/// The key part of a fused bias (`parts` 3: q,k,v; `parts` 2: k,v) must be all zeros.
fn check_zero_key_bias(model: &Ct2Model<'_>, source: &Source) -> Result<(), String> {
    let bias_name = source.variable.replace("/weight", "/bias");
    let bias = model.get(&bias_name)?;
    let len = bias.data.len() / source.parts;
    let key = if source.parts == 3 { &bias.data[len..2 * len] } else { &bias.data[..len] };
    // +0.0 and -0.0 are both zero in f16 and f32.
    let nonzero = match bias.dtype {
        CT2_F16 => key.chunks_exact(2).any(|h| u16::from_le_bytes([h[0], h[1]]) & 0x7fff != 0),
        _ => key.chunks_exact(4).any(|h| u32::from_le_bytes(h.try_into().unwrap()) & 0x7fff_ffff != 0),
    };
    if nonzero {
        return Err(format!("`{bias_name}` has a non-zero key bias, which whisper.cpp cannot represent"));
    }
    Ok(())
}

/// GPT-2's byte-level BPE alphabet reversed: the printable character standing for each byte.
fn byte_decoder() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    printable.into_iter().zip(chars).map(|(b, c)| (char::from_u32(c).unwrap(), b as u8)).collect()
}

/// Slaney-scale mel filterbank with Slaney area normalisation for 16 kHz audio and
/// n_fft 400: librosa's `filters.mel(sr=16000, n_fft=400, n_mels=n_mels)`, which is what
/// OpenAI's Whisper uses. Row-major `[n_mels, 201]`, computed in f64 and stored as f32.
pub fn mel_filterbank(n_mels: usize) -> Vec<f32> {
    let n_freq = N_FFT / 2 + 1;
    let fft_freqs: Vec<f64> = (0..n_freq).map(|i| i as f64 * (SAMPLE_RATE / 2.0) / (n_freq - 1) as f64).collect();
    let (min_mel, max_mel) = (hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2.0));
    let mel_f: Vec<f64> = (0..n_mels + 2).map(|i| mel_to_hz(min_mel + (max_mel - min_mel) * i as f64 / (n_mels + 1) as f64)).collect();
    let mut weights = vec![0f32; n_mels * n_freq];
    for m in 0..n_mels {
        let (lo, mid, hi) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
        let enorm = 2.0 / (hi - lo);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - lo) / (mid - lo);
            let upper = (hi - f) / (hi - mid);
            weights[m * n_freq + k] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    weights
}

/// Slaney mel scale: linear below 1 kHz, logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_mel = 1000.0 / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= 1000.0 {
        min_log_mel + (hz / 1000.0).ln() / logstep
    } else {
        hz / f_sp
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_mel = 1000.0 / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        1000.0 * (logstep * (mel - min_log_mel)).exp()
    } else {
        f_sp * mel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_decoder_covers_every_byte_once() {
        let d = byte_decoder();
        assert_eq!(d.len(), 256);
        assert_eq!(d[&'Ġ'], b' ');
        assert_eq!(d[&'Ċ'], b'\n');
        assert_eq!(d[&'!'], b'!');
        let mut bytes: Vec<u8> = d.values().copied().collect();
        bytes.sort();
        bytes.dedup();
        assert_eq!(bytes.len(), 256);
    }

    #[test]
    fn mel_scale_round_trips_and_is_slaney() {
        for hz in [0.0, 500.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9);
        }
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
    }

    #[test]
    fn filterbank_matches_librosa_values() {
        // Reference values: faster-whisper 1.2.1's `FeatureExtractor().mel_filters` (its port
        // of librosa's `filters.mel(sr=16000, n_fft=400, n_mels=80)`).
        let f = mel_filterbank(80);
        assert_eq!(f.len(), 80 * 201);
        let at = |m: usize, k: usize| f[m * 201 + k];
        assert_eq!(at(0, 0), 0.0);
        for (m, k, want) in [(0, 1, 0.024_862_595), (1, 1, 0.001_990_822), (1, 2, 0.022_871_772)] {
            assert!((at(m, k) - want).abs() < 1e-7, "filter {m} bin {k}: {} vs {want}", at(m, k));
        }
        let last_peak = (190..201).map(|k| at(79, k)).fold(0f32, f32::max);
        assert!((last_peak - 0.003_164_711_6).abs() < 1e-8, "{last_peak}");
        let total: f64 = f.iter().map(|&x| x as f64).sum();
        assert!((total - 1.999_024_2).abs() < 1e-5, "{total}");
        // Every filter is non-negative and non-empty; the area normalisation makes the
        // narrow low filters taller than the wide high ones.
        for m in 0..80 {
            assert!((0..201).all(|k| at(m, k) >= 0.0));
            assert!((0..201).any(|k| at(m, k) > 0.0), "filter {m} is empty");
        }
        let peak = |m: usize| (0..201).map(|k| at(m, k)).fold(0f32, f32::max);
        assert!(peak(0) > peak(79));
    }
}
