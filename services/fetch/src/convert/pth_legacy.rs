//! Legacy PyTorch checkpoint (`torch.save` before the zip format, or with
//! `_use_new_zipfile_serialization=False`) -> safetensors.
//!
//! The legacy layout is a sequence of pickles followed by raw storages:
//! 1. magic number `0x1950a86a20f9469cfc6c` (a 10-byte LONG1),
//! 2. protocol version, 3. system info (endianness, type sizes),
//! 4. the state dict, whose tensors reference storages by persistent id
//!    `('storage', <type>, <key>, <device>, <numel>, <view>)`,
//! 5. the list of storage keys, in the order the storages follow,
//! 6. for each key: an i64 element count, then the little-endian elements.
//!
//! Pickles 3-5 are decoded with candle's pickle machine (`candle_core::pickle`). A tensor
//! may be a strided view of its storage (offset, non-contiguous strides), so elements
//! are gathered by their strides rather than copied as one block.

use std::{
    collections::HashMap,
    fs::File,
    io::{BufRead, BufReader, Read},
    path::Path,
};

use candle_core::{
    pickle::{Object, Stack},
    DType, Device, Tensor,
};

/// Pickle protocol 2 header + LONG1 of 10 bytes holding the legacy magic number + STOP.
const MAGIC_PICKLE: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e";

/// Converts the legacy checkpoint at `input` into a safetensors file at `output`.
pub fn convert(input: &Path, output: &Path) -> Result<(), String> {
    let tensors = read(input).map_err(|e| format!("{}: {e}", input.display()))?;
    candle_core::safetensors::save(&tensors, output).map_err(|e| format!("writing {}: {e}", output.display()))
}

/// Reads every tensor of a legacy checkpoint.
pub fn read(input: &Path) -> Result<HashMap<String, Tensor>, String> {
    let mut r = BufReader::new(File::open(input).map_err(|e| e.to_string())?);
    let mut magic = [0u8; MAGIC_PICKLE.len()];
    r.read_exact(&mut magic).map_err(|e| e.to_string())?;
    if magic != MAGIC_PICKLE {
        return Err("not a legacy PyTorch checkpoint (magic number missing; zip checkpoints load directly)".into());
    }
    let _protocol = unpickle(&mut r)?;
    let _sys_info = unpickle(&mut r)?;
    let state = unpickle(&mut r)?;
    let keys: Vec<String> = match unpickle(&mut r)? {
        Object::List(items) | Object::Tuple(items) => {
            items.into_iter().map(|o| o.unicode().map_err(|o| format!("storage key is not a string: {o:?}"))).collect::<Result<_, _>>()?
        }
        other => return Err(format!("expected the storage key list, found {other:?}")),
    };

    let entries = state_dict_entries(state)?;
    let mut specs = Vec::new();
    for (name, value) in entries {
        let name = name.unicode().map_err(|o| format!("tensor name is not a string: {}", short(&o)))?;
        // OrderedDict's `_metadata` attribute (module versions), not a tensor.
        if name == "_metadata" {
            continue;
        }
        specs.push((name.clone(), tensor_spec(value).map_err(|e| format!("tensor {name}: {e}"))?));
    }

    // Storages follow in key order: element count (i64 LE) then the raw elements.
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for key in &keys {
        let mut n = [0u8; 8];
        r.read_exact(&mut n).map_err(|e| format!("storage {key}: {e}"))?;
        let numel = i64::from_le_bytes(n);
        let elem = specs
            .iter()
            .find(|(_, s)| &s.storage_key == key)
            .map(|(_, s)| s.dtype.size_in_bytes())
            .ok_or_else(|| format!("storage {key} is not used by any tensor"))?;
        let len = usize::try_from(numel).map_err(|_| format!("storage {key}: bad size {numel}"))? * elem;
        let mut data = vec![0u8; len];
        r.read_exact(&mut data).map_err(|e| format!("storage {key} ({len} bytes): {e}"))?;
        storages.insert(key.clone(), data);
    }
    if !r.fill_buf().map_err(|e| e.to_string())?.is_empty() {
        return Err("trailing bytes after the last storage".into());
    }

    let mut out = HashMap::new();
    for (name, spec) in specs {
        let storage = storages.get(&spec.storage_key).ok_or_else(|| format!("{name}: storage missing"))?;
        let bytes = gather(storage, &spec).map_err(|e| format!("{name}: {e}"))?;
        let tensor = Tensor::from_raw_buffer(&bytes, spec.dtype, &spec.shape, &Device::Cpu).map_err(|e| format!("{name}: {e}"))?;
        out.insert(name, tensor);
    }
    Ok(out)
}

/// A pickle object's debug form, cut to a readable length for error messages.
fn short(o: &Object) -> String {
    let s = format!("{o:?}");
    if s.len() > 160 {
        format!("{}...", &s[..s.char_indices().nth(160).map_or(s.len(), |(i, _)| i)])
    } else {
        s
    }
}

fn unpickle<R: BufRead>(r: &mut R) -> Result<Object, String> {
    let mut stack = Stack::empty();
    stack.read_loop(r).map_err(|e| format!("pickle: {e}"))?;
    stack.finalize().map_err(|e| format!("pickle: {e}"))
}

/// The (name, value) pairs of a state dict, however it was pickled.
fn state_dict_entries(obj: Object) -> Result<Vec<(Object, Object)>, String> {
    match obj {
        Object::Dict(kv) => Ok(kv),
        // OrderedDict with a `_metadata` attribute set by BUILD.
        Object::Build { callable, .. } => state_dict_entries(*callable),
        other => Err(format!("expected a state dict, found {other:?}")),
    }
}

/// Where a tensor's elements are in its storage.
#[derive(Debug)]
struct TensorSpec {
    storage_key: String,
    dtype: DType,
    shape: Vec<usize>,
    stride: Vec<usize>,
    offset: usize,
}

/// Decodes `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`,
/// optionally wrapped in `_rebuild_parameter`.
fn tensor_spec(value: Object) -> Result<TensorSpec, String> {
    let (callable, args) = value.reduce().map_err(|o| format!("not a tensor: {}", short(&o)))?;
    let (callable, args) = match callable {
        Object::Class { module_name, class_name } if module_name == "torch._utils" && class_name == "_rebuild_parameter" => {
            let mut a = args.tuple().map_err(|o| format!("{o:?}"))?;
            a.remove(0).reduce().map_err(|o| format!("{o:?}"))?
        }
        c => (c, args),
    };
    match &callable {
        Object::Class { module_name, class_name } if module_name == "torch._utils" && class_name == "_rebuild_tensor_v2" => {}
        other => return Err(format!("unsupported tensor constructor {other:?}")),
    }
    let mut a = args.tuple().map_err(|o| format!("{o:?}"))?;
    if a.len() < 4 {
        return Err("short _rebuild_tensor_v2 arguments".into());
    }
    let stride = usizes(a.remove(3))?;
    let shape = usizes(a.remove(2))?;
    let offset = a.remove(1).int_or_long().map_err(|o| format!("offset {o:?}"))? as usize;
    let mut storage = a.remove(0).persistent_load().map_err(|o| format!("{o:?}"))?.tuple().map_err(|o| format!("{o:?}"))?;
    if storage.len() < 3 {
        return Err("short storage id".into());
    }
    let storage_key = storage.remove(2).unicode().map_err(|o| format!("storage key {o:?}"))?;
    let (_, class_name) = storage.remove(1).class().map_err(|o| format!("storage type {o:?}"))?;
    let dtype = match class_name.as_str() {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "ByteStorage" => DType::U8,
        "LongStorage" => DType::I64,
        other => return Err(format!("unsupported storage type {other}")),
    };
    if stride.len() != shape.len() {
        return Err("shape and stride ranks differ".into());
    }
    Ok(TensorSpec { storage_key, dtype, shape, stride, offset })
}

fn usizes(o: Object) -> Result<Vec<usize>, String> {
    match o {
        Object::Tuple(v) | Object::List(v) => v.into_iter().map(|x| x.int_or_long().map(|i| i as usize).map_err(|o| format!("{o:?}"))).collect(),
        other => Err(format!("expected a tuple of ints, found {other:?}")),
    }
}

/// Copies a tensor's elements out of its storage, row-major, following its strides.
fn gather(storage: &[u8], spec: &TensorSpec) -> Result<Vec<u8>, String> {
    let elem = spec.dtype.size_in_bytes();
    let numel: usize = spec.shape.iter().product();
    let mut out = Vec::with_capacity(numel * elem);
    if numel == 0 {
        return Ok(out);
    }
    let mut index = vec![0usize; spec.shape.len()];
    for _ in 0..numel {
        let pos = spec.offset + index.iter().zip(&spec.stride).map(|(i, s)| i * s).sum::<usize>();
        let bytes =
            storage.get(pos * elem..(pos + 1) * elem).ok_or_else(|| format!("element {pos} outside its storage of {} bytes", storage.len()))?;
        out.extend_from_slice(bytes);
        // Advance the multi-index, last dimension fastest.
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < spec.shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_follows_strides_of_a_transposed_view() {
        // Storage holds a 2x3 matrix [[0,1,2],[3,4,5]]; the view is its transpose (3x2).
        let storage: Vec<u8> = (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let spec = TensorSpec { storage_key: "0".into(), dtype: DType::F32, shape: vec![3, 2], stride: vec![1, 3], offset: 0 };
        let out = gather(&storage, &spec).unwrap();
        let vals: Vec<f32> = out.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(vals, vec![0., 3., 1., 4., 2., 5.]);
    }

    #[test]
    fn gather_honours_offsets_and_rejects_overruns() {
        let storage: Vec<u8> = (0..4).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let ok = TensorSpec { storage_key: "0".into(), dtype: DType::F32, shape: vec![2], stride: vec![1], offset: 2 };
        let vals: Vec<f32> = gather(&storage, &ok).unwrap().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(vals, vec![2., 3.]);
        let bad = TensorSpec { offset: 3, ..ok };
        assert!(gather(&storage, &bad).is_err());
    }

    #[test]
    fn non_legacy_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pth");
        std::fs::write(&p, b"PK\x03\x04 zip checkpoint").unwrap();
        assert!(read(&p).unwrap_err().contains("magic"));
    }
}
