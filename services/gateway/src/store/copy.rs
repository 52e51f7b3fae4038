//! Copies everything one store holds into another (`mmc db copy`): images with their
//! records, vectors, captions, reviews and thumbnails, and meetings with their segment
//! vectors. No model runs: the vectors move as they are, so the target answers searches
//! exactly as the source did.
//!
//! Resumable: what the target already holds (by image id, by meeting id) is skipped, so an
//! interrupted copy is finished by running it again. Images are copied in the source's
//! insertion order, so ListImages pages in the same order.
//!
//! When the images to copy outnumber those the target holds, the copy is a bulk load
//! ([`ImageStore::begin_bulk_load`]): PostgreSQL's HNSW index is built once over all rows
//! at the end instead of row by row (see docs/gateway.md for the difference).

use super::{ImageRecord, ImageVectors, StoreError, Stores};

/// Images read and written per transaction.
const BATCH: usize = 500;

/// How far a copy is (passed to the progress callback after every batch).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyProgress {
    pub images_total: u64,
    /// Images written to the target.
    pub images_copied: u64,
    /// Images the target already held (an earlier, interrupted copy).
    pub images_skipped: u64,
    pub meetings_total: u64,
    pub meetings_copied: u64,
    pub meetings_skipped: u64,
}

/// Copies `from` into `to` (see the module docs).
pub async fn copy(from: &Stores, to: &Stores, mut progress: impl FnMut(&CopyProgress)) -> Result<CopyProgress, StoreError> {
    let mut done = CopyProgress { images_total: from.images.count().await?, ..Default::default() };
    let bulk = done.images_total > to.images.count().await?;
    if bulk {
        to.images.begin_bulk_load().await?;
    }
    if let Some(space) = from.images.space().await? {
        let mut after = 0;
        loop {
            let (page, next) = from.images.export(after, BATCH).await?;
            let mut fresh: Vec<(ImageRecord, ImageVectors)> = Vec::with_capacity(page.len());
            for (record, vectors) in page {
                if to.images.get(&record.image_id).await?.is_some() {
                    done.images_skipped += 1;
                    continue;
                }
                // The thumbnail first, as the index flow does: a stored image always has
                // the thumbnail it had.
                if let Some(jpeg) = from.thumbnails.get(&record.image_id).await? {
                    to.thumbnails.put(&record.image_id, jpeg).await?;
                }
                fresh.push((record, vectors));
            }
            done.images_copied += fresh.len() as u64;
            if !fresh.is_empty() {
                to.images.insert_many(fresh, space.clone()).await?;
            }
            progress(&done);
            match next {
                Some(n) => after = n,
                None => break,
            }
        }
    }
    if bulk {
        to.images.end_bulk_load().await?;
    }
    let meetings = from.meetings.list().await?;
    done.meetings_total = meetings.len() as u64;
    // Oldest first, so the target's newest-first listing matches.
    for meeting in meetings.iter().rev() {
        if to.meetings.get(&meeting.meeting_id).await?.is_some() {
            done.meetings_skipped += 1;
        } else if let Some(stored) = from.meetings.get(&meeting.meeting_id).await? {
            to.meetings.put(&stored.meeting, &stored.vectors, &stored.space).await?;
            done.meetings_copied += 1;
        }
        progress(&done);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Meeting, Segment};
    use crate::store::{embedded, Space};

    fn image(i: usize) -> (ImageRecord, ImageVectors) {
        let record = ImageRecord {
            image_id: format!("img-{i}"),
            content_hash: format!("{i:064x}"),
            source_name: format!("{i}.jpg"),
            caption: format!("photo {i}"),
            labels: vec![],
            metadata: [("album".to_string(), "a".to_string())].into(),
            models: vec![],
            indexed_at_unix_ms: i as i64,
            seq: 0,
            review: Default::default(),
        };
        (record, ImageVectors { image: vec![1.0, 0.0], caption: vec![0.0, 1.0] })
    }

    #[tokio::test]
    async fn copies_everything_once_and_resumes() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (from, to) = (embedded::open(a.path(), Default::default()).unwrap(), embedded::open(b.path(), Default::default()).unwrap());
        let space = Space { model_id: "m".into(), dimensions: 2 };
        from.images.insert_many((0..1_203).map(image).collect(), space.clone()).await.unwrap();
        from.thumbnails.put("img-7", vec![7, 7]).await.unwrap();
        let meeting =
            Meeting { meeting_id: "mtg-1".into(), segments: vec![Segment { id: 0, text: "hi".into(), ..Default::default() }], ..Default::default() };
        from.meetings.put(&meeting, &[vec![0.6, 0.8]], &space).await.unwrap();
        // A copy interrupted after two images: they are skipped, the rest copied.
        to.images.insert_many((0..2).map(image).collect(), space.clone()).await.unwrap();
        let mut reports = 0;
        let done = copy(&from, &to, |_| reports += 1).await.unwrap();
        assert_eq!((done.images_total, done.images_copied, done.images_skipped), (1_203, 1_201, 2));
        assert_eq!((done.meetings_copied, done.meetings_skipped), (1, 0));
        assert!(reports >= 4, "progress after every batch");
        assert_eq!(to.images.count().await.unwrap(), 1_203);
        assert_eq!(to.thumbnails.get("img-7").await.unwrap(), Some(vec![7, 7]));
        let copied = to.meetings.get("mtg-1").await.unwrap().unwrap();
        assert_eq!((copied.meeting, copied.vectors, copied.space), (meeting, vec![vec![0.6, 0.8]], space.clone()));
        // Records, vectors and insertion order are the source's.
        let (page, _) = to.images.export(0, 5).await.unwrap();
        let want = from.images.export(0, 5).await.unwrap().0;
        let strip = |v: Vec<(ImageRecord, ImageVectors)>| {
            v.into_iter().map(|(mut r, v)| (std::mem::take(&mut r.image_id), r.metadata, v)).collect::<Vec<_>>()
        };
        assert_eq!(strip(page), strip(want));
        // Run again: nothing left to do.
        let again = copy(&from, &to, |_| {}).await.unwrap();
        assert_eq!((again.images_copied, again.images_skipped, again.meetings_copied, again.meetings_skipped), (0, 1_203, 0, 1));
    }
}
