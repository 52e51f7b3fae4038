//! Inference core of the latent service: owns the loaded engines and their batchers.
//!
//! Engines load after the server starts (health says NOT_SERVING meanwhile); until then
//! calls get [`CoreError::Loading`].

use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;

use mmc_runtime::batcher::{BatchError, Batcher, BatcherConfig};
use tokio::sync::OnceCell;

use mmc_media::image::{ImageError, ImageLimits, RgbImage};

use crate::engine::{
    blip_vision::{self, BlipVision},
    clip::{self, Clip},
    conse,
    efficientnet::{EfficientNetLite0, IMAGE_SIZE},
    text::{revision_of, TextEmbedding, TextEncoder},
    EngineError, ModelId, TextEmbedder,
};

/// Folder in the models directory where the ConSE class embeddings are cached
/// ([`conse::cached_class_embeddings`]).
const CLASS_EMBEDDING_CACHE: &str = ".cache/conse";

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub models_dir: PathBuf,
    pub text_model: String,
    pub profile: String,
    pub max_text_tokens: usize,
    pub max_batch: usize,
    pub max_wait: Duration,
    pub queue_capacity: usize,
    /// Image classifier: a model id in the models directory.
    pub image_model: String,
    /// Classes combined per image (ConSE's T).
    pub conse_top_t: usize,
    /// Sentence embedded for each class; `{}` is replaced by the class name and `{gloss}` by
    /// its WordNet definition.
    pub class_template: String,
    pub image_limits: ImageLimits,
    /// Pixels decoded at once across all requests (see [`EmbedCore::prepare`]); at least
    /// `image_limits.max_pixels`.
    pub decode_pixel_budget: u64,
    /// Text bytes tokenized and embedded at once across all requests (see
    /// [`EmbedCore::embed_texts`]); at least [`MAX_TEXT_BYTES_AFTER_CUT`].
    pub text_byte_budget: u64,
    /// Device both encoders run on.
    pub device: mmc_models::DeviceSpec,
}

/// Errors the edge maps to gRPC status codes.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("the model is still loading")]
    Loading,
    #[error("text #{index} has {tokens} tokens or more; {model} takes at most {limit} (leave reject_overlong unset to truncate)")]
    TooLong { index: usize, tokens: usize, limit: usize, model: String },
    #[error("text #{index} still has {bytes} bytes in its first words (words of up to a megabyte without a space); at most {MAX_TEXT_BYTES_AFTER_CUT} are read")]
    TextTooLarge { index: usize, bytes: usize },
    #[error("image #{index}: {error}")]
    Image { index: usize, error: ImageError },
    #[error("the image model {image_model} gives patch latents for caption decoders, not vectors in the text space: EmbedImage needs a CLIP text model (its image tower, e.g. --text-model clip-vit-base-patch32) or a classifier image model (ConSE, e.g. --image-model efficientnet-lite0); EncodeImage works")]
    NoSharedSpace { image_model: String },
    #[error(transparent)]
    Batch(#[from] BatchError<EngineError>),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

struct TextPath {
    encoder: Arc<dyn TextEmbedder>,
    batcher: Batcher<String, TextEmbedding, EngineError>,
}

/// CLIP's image tower, when the text model is CLIP: `EmbedImage` then maps images straight
/// into CLIP's space instead of through a classifier (ConSE).
struct ClipImages {
    clip: Arc<Clip>,
    batcher: Batcher<Vec<f32>, Vec<f32>, EngineError>,
}

/// Classifier output for one image.
#[derive(Debug, Clone)]
pub struct ImageOut {
    pub probs: Vec<f32>,
    pub pooled: Vec<f32>,
}

/// What ConSE maps a classifier's output with.
struct ConseSpace {
    /// Text embedding of each class sentence, by class index.
    class_embeddings: Vec<Vec<f32>>,
    /// [`conse::config_digest`] of T and the class sentences.
    digest: String,
}

/// How the loaded image model encodes, chosen by its files: a classifier (labels, and
/// ConSE into the text space) or BLIP's ViT (patch latents for a transformer decoder).
enum ImageEncoder {
    Classifier {
        batcher: Batcher<Vec<u8>, ImageOut, EngineError>,
        /// Readable class names, by class index.
        names: Vec<String>,
        /// The way into the text space; None when CLIP's image tower is that way.
        conse: Option<ConseSpace>,
    },
    Patches {
        vision: Arc<BlipVision>,
        batcher: Batcher<Vec<f32>, Vec<f32>, EngineError>,
    },
}

struct ImagePath {
    model: ModelId,
    encoder: ImageEncoder,
}

/// Patch latents of one image, row-major `[rows, hidden]` (row 0 is the class token).
#[derive(Debug, Clone)]
pub struct PatchLatents {
    pub rows: usize,
    pub hidden: usize,
    pub values: Vec<f32>,
}

/// A label with its probability.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScore {
    pub name: String,
    pub probability: f32,
    pub class_index: u32,
}

/// What `EncodeImage` returns for one image.
#[derive(Debug, Clone)]
pub struct ImageEncoding {
    /// Top labels (classifier encoders; empty for patch encoders).
    pub labels: Vec<LabelScore>,
    /// The penultimate features (classifier) or the class token's latent (ViT).
    pub pooled: Vec<f32>,
    /// Patch latents (ViT encoders only).
    pub patches: Option<PatchLatents>,
    pub width: u32,
    pub height: u32,
}

/// The loaded models of the service.
pub struct EmbedCore {
    config: CoreConfig,
    text: OnceCell<TextPath>,
    image: OnceCell<ImagePath>,
    clip_images: OnceCell<ClipImages>,
    /// The decode budget, one permit per started megapixel.
    decoding: Budget,
    /// The text budget, one permit per started KiB of text after the cut.
    texts: Budget,
}

/// Megapixels (started) of a `width` x `height` image: its permits in the decode budget.
fn megapixels(width: u32, height: u32) -> u64 {
    (u64::from(width) * u64::from(height)).div_ceil(1_000_000).max(1)
}

/// A memory budget shared by all requests: a semaphore of `capacity` units, a wait gauge
/// and a wait-time histogram. A taker never asks for more than all of it, so one huge
/// request runs alone instead of waiting forever.
struct Budget {
    permits: Arc<tokio::sync::Semaphore>,
    capacity: u32,
    waiting_gauge: &'static str,
    wait_histogram: &'static str,
}

impl Budget {
    fn new(units: u64, waiting_gauge: &'static str, wait_histogram: &'static str) -> Self {
        let capacity = units.clamp(1, (u32::MAX as u64).min(tokio::sync::Semaphore::MAX_PERMITS as u64)) as u32;
        Self { permits: Arc::new(tokio::sync::Semaphore::new(capacity as usize)), capacity, waiting_gauge, wait_histogram }
    }

    /// Waits for `units` (at most the whole budget), counted in the metrics; held until
    /// the permit drops.
    async fn take(&self, units: u64) -> Result<tokio::sync::OwnedSemaphorePermit, CoreError> {
        let wanted = units.clamp(1, u64::from(self.capacity)) as u32;
        let waited = std::time::Instant::now();
        metrics::gauge!(self.waiting_gauge).increment(1.0);
        let permit = self.permits.clone().acquire_many_owned(wanted).await;
        metrics::gauge!(self.waiting_gauge).decrement(1.0);
        metrics::histogram!(self.wait_histogram).record(waited.elapsed().as_secs_f64());
        permit.map_err(|_| CoreError::Loading)
    }
}

impl EmbedCore {
    pub fn new(config: CoreConfig) -> Arc<Self> {
        let megapixels = config.decode_pixel_budget.max(config.image_limits.max_pixels).div_ceil(1_000_000);
        let decoding = Budget::new(megapixels, "mmc_embed_decodes_waiting", "mmc_embed_decode_budget_wait_seconds");
        let kib = config.text_byte_budget.max(MAX_TEXT_BYTES_AFTER_CUT as u64).div_ceil(1024);
        let texts = Budget::new(kib, "mmc_embed_texts_waiting", "mmc_embed_text_budget_wait_seconds");
        Arc::new(Self { config, text: OnceCell::new(), image: OnceCell::new(), clip_images: OnceCell::new(), decoding, texts })
    }

    /// Loads the models and runs one inference; the service is SERVING only after this.
    pub async fn load_and_warm_up(&self) -> Result<(), EngineError> {
        let cfg = self.config.clone();
        let encoder = tokio::task::spawn_blocking(move || {
            let dir = fetched_dir(&cfg.models_dir, &cfg.text_model)?;
            // One device (one CUDA context) for both encoders.
            let device = cfg.device.candle().map_err(|e| EngineError::Load(e.to_string()))?;
            let (encoder, clip): (Arc<dyn TextEmbedder>, Option<Arc<Clip>>) = if clip::is_clip(&dir) {
                let clip = Arc::new(Clip::load(&dir, &cfg.text_model, &cfg.profile, cfg.max_text_tokens, &device)?);
                let gray = RgbImage::from_pixel(8, 8, [128, 128, 128].into());
                clip.embed_images(&[clip.preprocess(&gray)])?;
                (clip.clone(), Some(clip))
            } else {
                (Arc::new(TextEncoder::load(&dir, &cfg.text_model, &cfg.profile, cfg.max_text_tokens, &device)?), None)
            };
            encoder.embed(&["warm-up".to_string()])?;
            Ok::<_, EngineError>((encoder, clip, device))
        })
        .await
        .map_err(|e| EngineError::Load(e.to_string()))??;
        let (encoder, clip, device) = encoder;
        let engine = encoder.clone();
        let batcher = Batcher::spawn(
            BatcherConfig {
                name: "embed_text",
                max_batch: self.config.max_batch,
                max_wait: self.config.max_wait,
                queue_capacity: self.config.queue_capacity,
            },
            move |texts: Vec<String>| engine.embed(&texts),
        );
        tracing::info!(model = %encoder.model_id().id, family = %encoder.model_id().family, revision = %encoder.model_id().revision, "text encoder ready");
        let _ = self.text.set(TextPath { encoder: encoder.clone(), batcher });
        if let Some(clip) = clip {
            let engine = clip.clone();
            let batcher = Batcher::spawn(
                BatcherConfig {
                    name: "embed_image_clip",
                    max_batch: self.config.max_batch.min(16),
                    max_wait: self.config.max_wait,
                    queue_capacity: self.config.queue_capacity,
                },
                move |pixels: Vec<Vec<f32>>| engine.embed_images(&pixels),
            );
            let _ = self.clip_images.set(ClipImages { clip, batcher });
            // CLIP is the shared space: the classifier (if any) serves EncodeImage only.
            return self.load_image_path(encoder, device, false).await;
        }
        self.load_image_path(encoder, device, true).await
    }

    /// Loads the image model its files call for: BLIP's vision tower, or the classifier,
    /// with (when `conse`, i.e. it is the way into the text space) the class sentences
    /// embedded by the text encoder (about 7 s for 1000 classes on 2 cores, so the result
    /// is cached in the models directory and later starts read it).
    async fn load_image_path(&self, text: Arc<dyn TextEmbedder>, device: candle_core::Device, conse: bool) -> Result<(), EngineError> {
        let cfg = self.config.clone();
        let dir = fetched_dir(&cfg.models_dir, &cfg.image_model)?;
        let batch_config = BatcherConfig {
            name: "encode_image",
            max_batch: self.config.max_batch.min(16),
            max_wait: self.config.max_wait,
            queue_capacity: self.config.queue_capacity,
        };
        let path = if blip_vision::is_blip(&dir) {
            let (vision, id) = tokio::task::spawn_blocking(move || {
                let vision = BlipVision::load(&dir, &device)?;
                let gray = RgbImage::from_pixel(8, 8, [128, 128, 128].into());
                vision.encode(&[vision.preprocess(&gray)])?;
                let id = ModelId {
                    id: cfg.image_model.clone(),
                    family: "blip-vision".into(),
                    profile: cfg.profile.clone(),
                    revision: revision_of(&dir, "model.safetensors"),
                    dimensions: vision.hidden_size() as u32,
                };
                Ok::<_, EngineError>((Arc::new(vision), id))
            })
            .await
            .map_err(|e| EngineError::Load(e.to_string()))??;
            let engine = vision.clone();
            let batcher = Batcher::spawn(batch_config, move |pixels: Vec<Vec<f32>>| engine.encode(&pixels));
            tracing::info!(model = %id.id, revision = %id.revision, "image encoder ready (BLIP patch latents)");
            ImagePath { model: id, encoder: ImageEncoder::Patches { vision, batcher } }
        } else {
            let (model, id, names, conse) = tokio::task::spawn_blocking(move || {
                let model = EfficientNetLite0::load_file(&dir.join("model.safetensors"), &device)?;
                model.classify(&[vec![128u8; 3 * IMAGE_SIZE * IMAGE_SIZE]])?;
                let labels: Vec<&str> = mmc_models::labels::imagenet_1k();
                let conse = if conse {
                    let glosses = mmc_models::labels::imagenet_1k_glosses();
                    let sentences: Vec<String> =
                        labels.iter().zip(&glosses).map(|(l, g)| conse::class_sentence(&cfg.class_template, l, g.definition)).collect();
                    let cache_dir = cfg.models_dir.join(CLASS_EMBEDDING_CACHE);
                    let class_embeddings = conse::cached_class_embeddings(&cache_dir, text.model_id(), &sentences, || {
                        let mut embeddings = Vec::with_capacity(sentences.len());
                        for chunk in sentences.chunks(64) {
                            embeddings.extend(text.embed(chunk)?.into_iter().map(|e| e.values));
                        }
                        Ok(embeddings)
                    })?;
                    Some(ConseSpace { class_embeddings, digest: conse::config_digest(cfg.conse_top_t, &sentences) })
                } else {
                    None
                };
                let names: Vec<String> = labels.iter().map(|l| mmc_models::labels::readable_name(l)).collect();
                let id = ModelId {
                    id: cfg.image_model.clone(),
                    family: "efficientnet-lite".into(),
                    profile: cfg.profile.clone(),
                    revision: revision_of(&dir, "model.safetensors"),
                    dimensions: 1280,
                };
                Ok::<_, EngineError>((Arc::new(model), id, names, conse))
            })
            .await
            .map_err(|e| EngineError::Load(e.to_string()))??;
            let engine = model.clone();
            let batcher = Batcher::spawn(batch_config, move |images: Vec<Vec<u8>>| {
                let out = engine.classify(&images)?;
                Ok(out.probs.into_iter().zip(out.pooled).map(|(probs, pooled)| ImageOut { probs, pooled }).collect())
            });
            tracing::info!(model = %id.id, revision = %id.revision, classes = names.len(), "image encoder ready (ConSE)");
            ImagePath { model: id, encoder: ImageEncoder::Classifier { batcher, names, conse } }
        };
        let _ = self.image.set(path);
        Ok(())
    }

    fn image(&self) -> Result<&ImagePath, CoreError> {
        self.image.get().ok_or(CoreError::Loading)
    }

    /// The image model, once loaded.
    pub fn image_model(&self) -> Option<ModelId> {
        self.image.get().map(|i| i.model.clone())
    }

    /// Identity of the shared space image vectors live in: CLIP's own, or the text model's
    /// space reached through the classifier (its revision, and the digest of T and the
    /// class sentences, are then part of the identity: "53aa51172d14+f46ec1c3cb68+1a2b3c4d").
    /// None until loaded, and for patch encoders without CLIP (they have no way into the
    /// text space).
    pub fn shared_space(&self) -> Option<ModelId> {
        let (text, _) = self.text_model()?;
        if self.clip_images.get().is_some() {
            return Some(text);
        }
        let (path, conse) = self.conse()?;
        Some(ModelId {
            family: format!("conse({})", path.model.id),
            revision: format!("{}+{}+{}", text.revision, path.model.revision, conse.digest),
            ..text
        })
    }

    /// The classifier and its ConSE state, when EmbedImage goes through ConSE (None under
    /// CLIP, before loading, or with a patch encoder).
    fn conse(&self) -> Option<(&ImagePath, &ConseSpace)> {
        let path = self.image.get()?;
        match &path.encoder {
            ImageEncoder::Classifier { conse: Some(conse), .. } => Some((path, conse)),
            _ => None,
        }
    }

    /// ConSE's T and class template, when EmbedImage goes through ConSE.
    pub fn conse_config(&self) -> Option<(usize, String)> {
        self.conse().map(|_| (self.config.conse_top_t.max(1), self.config.class_template.clone()))
    }

    pub fn image_limits(&self) -> ImageLimits {
        self.config.image_limits
    }

    /// Decodes the images one at a time and turns each into the encoder's input with
    /// `to_input` (blocking work, off the async threads); also returns each decoded size.
    ///
    /// Memory: a decoded image costs about 4 bytes a pixel while it is converted (a 131 KB
    /// PNG of 6300x6300 costs ~230 MB), and any number of requests may decode at once. So
    /// each decode first takes its megapixels from a budget shared by all requests
    /// (`--decode-pixel-budget`, 3 x the per-image limit by default), known from the header
    /// alone, and gives them back once the image is reduced to the encoder's input. A
    /// request that finds the budget spent waits (its deadline still applies, and ends the
    /// wait) instead of growing the process.
    async fn prepare<T, F>(&self, images: Vec<Bytes>, to_input: F) -> Result<Vec<(T, u32, u32)>, CoreError>
    where
        T: Send + 'static,
        F: Fn(&RgbImage) -> T + Send + 'static,
    {
        let limits = self.config.image_limits;
        // Moved into each blocking task and back out of it.
        let mut to_input = Some(to_input);
        let mut out = Vec::with_capacity(images.len());
        for (index, bytes) in images.into_iter().enumerate() {
            let (width, height) = mmc_media::image::dimensions(&bytes, &limits).map_err(|error| CoreError::Image { index, error })?;
            let permit = self.decoding.take(megapixels(width, height)).await?;
            let f = to_input.take().expect("given back by the previous image");
            let (f, prepared) = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let prepared = mmc_media::image::decode(&bytes, &limits).map_err(|error| CoreError::Image { index, error }).map(|decoded| {
                    let (w, h) = decoded.rgb.dimensions();
                    (f(&decoded.rgb), w, h)
                });
                (f, prepared)
            })
            .await
            .map_err(|e| CoreError::Engine(EngineError::Inference(e.to_string())))?;
            to_input = Some(f);
            out.push(prepared?);
        }
        Ok(out)
    }

    /// The classifier's input: the centre square at its size, as RGB bytes.
    fn classifier_input(rgb: &RgbImage) -> Vec<u8> {
        mmc_media::image::resize_center_crop(rgb, IMAGE_SIZE as u32).into_raw()
    }

    /// Encodes one image: its top-k labels and pooled features (classifier), or its
    /// patch latents (ViT); with `embed`, also the image in the shared space, from the same
    /// decode (and, with a classifier and ConSE, the same forward pass: the vector is a
    /// function of the class probabilities already computed).
    pub async fn encode_image(&self, bytes: Bytes, top_k: usize, embed: bool) -> Result<(ImageEncoding, Option<Vec<f32>>), CoreError> {
        let path = self.image()?;
        // CLIP's image tower, when it is the way into the text space and one is wanted.
        let clip = if embed { self.clip_images.get() } else { None };
        let clip_model = clip.map(|c| c.clip.clone());
        let clip_input = move |rgb: &RgbImage| clip_model.as_ref().map(|c| c.preprocess(rgb));
        match &path.encoder {
            ImageEncoder::Classifier { batcher, names, conse } => {
                if embed && clip.is_none() && conse.is_none() {
                    return Err(CoreError::NoSharedSpace { image_model: path.model.id.clone() });
                }
                let ((pixels, clip_pixels), width, height) =
                    self.prepare(vec![bytes], move |rgb| (Self::classifier_input(rgb), clip_input(rgb))).await?.remove(0);
                let out = batcher.submit(vec![pixels]).await?.remove(0);
                let mut order: Vec<usize> = (0..out.probs.len()).collect();
                order.sort_by(|&a, &b| out.probs[b].total_cmp(&out.probs[a]));
                let labels = order
                    .into_iter()
                    .take(top_k)
                    .map(|i| LabelScore { name: names[i].clone(), probability: out.probs[i], class_index: i as u32 })
                    .collect();
                let embedding = match (embed, clip, clip_pixels, conse) {
                    (false, ..) => None,
                    (true, Some(clip), Some(clip_pixels), _) => Some(clip.batcher.submit(vec![clip_pixels]).await?.remove(0)),
                    (true, _, _, Some(conse)) => Some(conse::combine(&out.probs, &conse.class_embeddings, self.config.conse_top_t)),
                    (true, ..) => return Err(CoreError::NoSharedSpace { image_model: path.model.id.clone() }),
                };
                Ok((ImageEncoding { labels, pooled: out.pooled, patches: None, width, height }, embedding))
            }
            ImageEncoder::Patches { vision, batcher } => match clip {
                Some(clip) => {
                    let (encoding, clip_pixels) = self.encode_patches(vision, batcher, bytes, clip_input).await?;
                    let clip_pixels = clip_pixels.expect("CLIP input prepared with the patches");
                    Ok((encoding, Some(clip.batcher.submit(vec![clip_pixels]).await?.remove(0))))
                }
                None if embed => Err(CoreError::NoSharedSpace { image_model: path.model.id.clone() }),
                None => Ok((self.encode_patches(vision, batcher, bytes, |_| None::<()>).await?.0, None)),
            },
        }
    }

    /// A ViT encoder's latents of one image, with whatever else `also` prepares from the
    /// same decode.
    async fn encode_patches<T: Send + 'static>(
        &self,
        vision: &Arc<BlipVision>,
        batcher: &Batcher<Vec<f32>, Vec<f32>, EngineError>,
        bytes: Bytes,
        also: impl Fn(&RgbImage) -> Option<T> + Send + 'static,
    ) -> Result<(ImageEncoding, Option<T>), CoreError> {
        let vision = vision.clone();
        let hidden = vision.hidden_size();
        let ((pixels, other), width, height) = self.prepare(vec![bytes], move |rgb| (vision.preprocess(rgb), also(rgb))).await?.remove(0);
        let values = batcher.submit(vec![pixels]).await?.remove(0);
        let patches = PatchLatents { rows: values.len() / hidden, hidden, values };
        let encoding = ImageEncoding { labels: Vec::new(), pooled: patches.values[..hidden].to_vec(), patches: Some(patches), width, height };
        Ok((encoding, other))
    }

    /// Maps images into the text space, by CLIP's image tower or by ConSE over the
    /// classifier: one unit vector per image.
    pub async fn embed_images(&self, images: Vec<Bytes>) -> Result<Vec<Vec<f32>>, CoreError> {
        if let Some(ClipImages { clip, batcher }) = self.clip_images.get() {
            let clip = clip.clone();
            let prepared = self.prepare(images, move |rgb| clip.preprocess(rgb)).await?;
            return Ok(batcher.submit(prepared.into_iter().map(|(p, _, _)| p).collect()).await?);
        }
        let path = self.image()?;
        let ImageEncoder::Classifier { batcher, conse: Some(conse), .. } = &path.encoder else {
            return Err(CoreError::NoSharedSpace { image_model: path.model.id.clone() });
        };
        let prepared = self.prepare(images, Self::classifier_input).await?;
        let outs = batcher.submit(prepared.into_iter().map(|(p, _, _)| p).collect()).await?;
        Ok(outs.iter().map(|o| conse::combine(&o.probs, &conse.class_embeddings, self.config.conse_top_t)).collect())
    }

    fn text(&self) -> Result<&TextPath, CoreError> {
        self.text.get().ok_or(CoreError::Loading)
    }

    /// The text model, once loaded.
    pub fn text_model(&self) -> Option<(ModelId, usize)> {
        self.text.get().map(|t| (t.encoder.model_id().clone(), t.encoder.max_tokens()))
    }

    /// Embeds texts through the batcher. With `reject_overlong`, a text over the token
    /// limit fails the whole request instead of being truncated.
    ///
    /// Memory: each text is cut to its first words before anything else (see
    /// [`cut_to_words`]), but tokenizing still costs up to ~170 bytes per byte of what is
    /// left (a page of one-character tokens), and any number of requests may tokenize at
    /// once. So a request first takes its bytes (in KiB) from a budget shared by all
    /// requests (`--text-byte-budget`, 2 MiB by default: ordinary requests of a few KiB
    /// never wait) and gives them back once its vectors are made; one that finds the budget
    /// spent waits, within its deadline, instead of growing the process.
    pub async fn embed_texts(&self, mut texts: Vec<String>, reject_overlong: bool) -> Result<Vec<TextEmbedding>, CoreError> {
        let text = self.text()?;
        let limit = text.encoder.max_tokens();
        for (index, t) in texts.iter_mut().enumerate() {
            cut_to_words(t, limit);
            if t.len() > MAX_TEXT_BYTES_AFTER_CUT {
                return Err(CoreError::TextTooLarge { index, bytes: t.len() });
            }
        }
        let kib: u64 = texts.iter().map(|t| t.len().div_ceil(1024) as u64).sum();
        let permit = self.texts.take(kib).await?;
        let result = async {
            if reject_overlong {
                let counts = text.encoder.count_tokens(&texts)?;
                if let Some((index, &tokens)) = counts.iter().enumerate().find(|(_, &c)| c > limit) {
                    return Err(CoreError::TooLong { index, tokens, limit, model: text.encoder.model_id().id.clone() });
                }
            }
            Ok(text.batcher.submit(texts).await?)
        }
        .await;
        if kib >= RELEASE_MEMORY_AFTER_KIB {
            // Before the next waiter starts: what this request's tokenizing freed stays in
            // its thread's arena otherwise, and the next one may grow another arena.
            let _ = tokio::task::spawn_blocking(mmc_runtime::memory::release_freed_memory).await;
        }
        drop(permit);
        result
    }
}

/// Requests with at least this many KiB of text (after the cut) hand the heap's free pages
/// back when they finish (see [`mmc_runtime::memory::release_freed_memory`]): tokenizing
/// 64 KiB of one-character tokens costs ~35 MB, ordinary requests hold a few KiB.
const RELEASE_MEMORY_AFTER_KIB: u64 = 64;

/// What a text may still hold after [`cut_to_words`]: its first few hundred words, unless
/// some of them are huge (a megabyte without a space). Beyond this it is refused before
/// tokenizing, which costs about 170 bytes of memory per input byte.
pub const MAX_TEXT_BYTES_AFTER_CUT: usize = 1 << 20;

/// Cuts `text` to its first `words` whitespace-separated words.
///
/// Why this is exact: the model reads a text's first `max_tokens` tokens, and every word
/// is at least one token, so those tokens lie within the first `max_tokens` words; a text
/// that is cut had more words than that, hence more tokens, and is flagged truncated either
/// way. The embedding does not change; the cost does: a 21 MB text was tokenized in full
/// before (28 s, +3.5 GB resident, issue #28), now its first page is.
pub fn cut_to_words(text: &mut String, words: usize) {
    let mut seen = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if !space && !in_word {
            if seen == words {
                text.truncate(i);
                return;
            }
            seen += 1;
        }
        in_word = !space;
    }
}

/// The directory of model `id` in `models_dir`, or [`EngineError::Missing`] naming the fetch
/// command when it was never fetched completely (no stamp file).
fn fetched_dir(models_dir: &std::path::Path, id: &str) -> Result<std::path::PathBuf, EngineError> {
    let dir = models_dir.join(id);
    if !dir.join(mmc_models::store::STAMP).is_file() {
        return Err(EngineError::Missing(format!("{id} is not fetched; run `mmc models fetch` (models directory {})", models_dir.display())));
    }
    Ok(dir)
}

#[cfg(test)]
mod cut_tests {
    use super::cut_to_words;

    #[test]
    fn texts_keep_their_first_words() {
        let cut = |t: &str, n| {
            let mut s = t.to_string();
            cut_to_words(&mut s, n);
            s
        };
        assert_eq!(cut("one two  three\nfour", 2), "one two  ");
        assert_eq!(cut("  one two", 5), "  one two");
        assert_eq!(cut("élan vital é", 1), "élan ");
        assert_eq!(cut("", 3), "");
        let long = "word ".repeat(5_000_000);
        assert_eq!(cut(&long, 256).len(), 256 * 5);
    }
}
