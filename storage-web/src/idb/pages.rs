//! The in-memory image of one database file: fixed-size chunks, plus the pre-image of every
//! chunk changed since the last flush, so the file can always go back to what IndexedDB holds.

use std::collections::BTreeMap;

use rsqlite_vfs::{VfsError, VfsErrorCode, VfsResult};

/// Bytes per chunk: SQLite's default page size, so a page write touches one chunk and one
/// IndexedDB record. Other page sizes still work (a page spans or shares chunks).
pub(crate) const CHUNK_SIZE: usize = 4096;

/// One database file held in memory, with what is needed to return to its durable state.
#[derive(Default)]
pub(crate) struct PagedFile {
    /// The file's content; every chunk is `CHUNK_SIZE` long (the last one zero-padded), except
    /// empty placeholders that only exist for a moment inside [`PagedFile::revert`].
    chunks: Vec<Box<[u8]>>,
    /// Logical length in bytes.
    size: u64,
    /// Length at the base state: the last successful flush (or the load), or while a flush
    /// is in flight, the state it writes.
    base_size: u64,
    /// For each chunk changed since the base state, its content then (`None`: it did not
    /// exist). Recorded on the first change only, so it always holds the base content.
    pre_images: BTreeMap<usize, Option<Box<[u8]>>>,
}

/// What a flush in flight took out of the file: the pre-images of the state before it
/// (obsolete once IndexedDB holds the flush), and the sizes before and after it.
pub(crate) struct PendingFlush {
    pre_images: BTreeMap<usize, Option<Box<[u8]>>>,
    previous_size: u64,
    size: u64,
}

impl PendingFlush {
    /// The size this flush writes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
}

fn too_large() -> VfsError {
    VfsError::new(VfsErrorCode::Full, "file size exceeds address space".into())
}

fn no_memory() -> VfsError {
    VfsError::new(
        VfsErrorCode::NoMemory,
        "no memory left for the database's pages".into(),
    )
}

/// Chunks needed to hold `size` bytes.
pub(crate) fn chunk_count(size: u64) -> usize {
    // Sizes come from files held in memory, so they fit in usize.
    usize::try_from(size.div_ceil(CHUNK_SIZE as u64)).unwrap_or(usize::MAX)
}

fn zeroed_chunk() -> VfsResult<Box<[u8]>> {
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(CHUNK_SIZE)
        .map_err(|_| no_memory())?;
    bytes.resize(CHUNK_SIZE, 0);
    Ok(bytes.into_boxed_slice())
}

impl PagedFile {
    /// A file as loaded from IndexedDB: `chunks` (each `CHUNK_SIZE` long) hold `size` bytes,
    /// which are its durable state.
    pub(crate) fn loaded(chunks: Vec<Box<[u8]>>, size: u64) -> Self {
        Self {
            chunks,
            size,
            base_size: size,
            pre_images: BTreeMap::new(),
        }
    }

    /// Logical length in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Bytes held in memory: the chunks and the pre-images.
    pub(crate) fn memory_len(&self) -> u64 {
        let pre_images = self.pre_images.values().flatten().count();
        ((self.chunks.len() + pre_images) * CHUNK_SIZE) as u64
    }

    /// Whether anything changed since the last flush.
    pub(crate) fn is_dirty(&self) -> bool {
        !self.pre_images.is_empty() || self.size != self.base_size
    }

    /// Records chunk `index`'s durable content before its first change since the last flush.
    fn touch(&mut self, index: usize) {
        self.pre_images
            .entry(index)
            .or_insert_with(|| self.chunks.get(index).cloned());
    }

    /// Grows the chunk list to `count` zeroed chunks, recording them as new.
    fn grow_to(&mut self, count: usize) -> VfsResult<()> {
        let extra = count.saturating_sub(self.chunks.len());
        self.chunks.try_reserve(extra).map_err(|_| no_memory())?;
        while self.chunks.len() < count {
            self.touch(self.chunks.len());
            self.chunks.push(zeroed_chunk()?);
        }
        Ok(())
    }

    /// Reads up to `buf.len()` bytes at `offset`, returning how many there were.
    pub(crate) fn read(&self, buf: &mut [u8], offset: u64) -> usize {
        if offset >= self.size {
            return 0;
        }
        let available = self.size - offset;
        let wanted = buf
            .len()
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        let mut done = 0;
        while done < wanted {
            let at = offset + done as u64;
            let index = (at / CHUNK_SIZE as u64) as usize;
            let within = (at % CHUNK_SIZE as u64) as usize;
            let n = (CHUNK_SIZE - within).min(wanted - done);
            match self.chunks.get(index) {
                Some(chunk) => buf[done..done + n].copy_from_slice(&chunk[within..within + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        wanted
    }

    /// Writes `buf` at `offset`, growing the file as needed (a gap reads as zeros).
    pub(crate) fn write(&mut self, buf: &[u8], offset: u64) -> VfsResult<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset.checked_add(buf.len() as u64).ok_or_else(too_large)?;
        usize::try_from(end).map_err(|_| too_large())?;
        self.grow_to(chunk_count(end))?;
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let index = (at / CHUNK_SIZE as u64) as usize;
            let within = (at % CHUNK_SIZE as u64) as usize;
            let n = (CHUNK_SIZE - within).min(buf.len() - done);
            self.touch(index);
            self.chunks[index][within..within + n].copy_from_slice(&buf[done..done + n]);
            done += n;
        }
        self.size = self.size.max(end);
        Ok(())
    }

    /// Sets the length to `size`: shrinking drops whole chunks and zeroes the tail of the
    /// last one (so a later growth reads zeros), growing adds zeros.
    pub(crate) fn truncate(&mut self, size: u64) -> VfsResult<()> {
        usize::try_from(size).map_err(|_| too_large())?;
        let count = chunk_count(size);
        if size > self.size {
            self.grow_to(count)?;
        }
        for index in count..self.chunks.len() {
            self.touch(index);
        }
        self.chunks.truncate(count);
        let tail = (size % CHUNK_SIZE as u64) as usize;
        if tail != 0 && size < self.size {
            self.touch(count - 1);
            self.chunks[count - 1][tail..].fill(0);
        }
        self.size = size;
        Ok(())
    }

    /// The chunks a flush must write, with their content, in index order.
    pub(crate) fn dirty_chunks(&self) -> impl Iterator<Item = (usize, &[u8])> + '_ {
        self.pre_images
            .keys()
            .filter_map(|&index| self.chunks.get(index).map(|chunk| (index, &chunk[..])))
    }

    /// The first chunk index IndexedDB holds that the file no longer has, if it shrank.
    pub(crate) fn first_removed_chunk(&self) -> Option<usize> {
        let count = chunk_count(self.size);
        (count < chunk_count(self.base_size)).then_some(count)
    }

    /// Starts a flush of the current state, which becomes the base: later changes are
    /// tracked against it (and a revert meanwhile returns to it).
    pub(crate) fn begin_flush(&mut self) -> PendingFlush {
        let previous_size = std::mem::replace(&mut self.base_size, self.size);
        PendingFlush {
            pre_images: std::mem::take(&mut self.pre_images),
            previous_size,
            size: self.size,
        }
    }

    /// The flush is held by IndexedDB: its state, the base already, is the durable one.
    pub(crate) fn finish_flush(&mut self, flush: PendingFlush) {
        drop(flush);
    }

    /// The flush failed: the durable state is still the one before it, so its pre-images
    /// come back (they are older than any recorded since), and the file returns there.
    pub(crate) fn fail_flush(&mut self, flush: PendingFlush) {
        for (index, pre_image) in flush.pre_images {
            self.pre_images.insert(index, pre_image);
        }
        self.base_size = flush.previous_size;
        self.revert();
    }

    /// Returns the file to its base state: the last successful flush (or the load), or the
    /// state a flush in flight writes (a failure of that flush then goes further back).
    pub(crate) fn revert(&mut self) {
        let count = chunk_count(self.base_size);
        // Placeholders for chunks truncated away since; each has a pre-image to restore.
        self.chunks.resize_with(count, Box::default);
        for (index, pre_image) in std::mem::take(&mut self.pre_images) {
            if let (Some(content), Some(slot)) = (pre_image, self.chunks.get_mut(index)) {
                *slot = content;
            }
        }
        self.size = self.base_size;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::{PagedFile, CHUNK_SIZE};
    use wasm_bindgen_test::wasm_bindgen_test;

    fn content(file: &PagedFile) -> Vec<u8> {
        let mut buf = vec![0; file.size() as usize];
        assert_eq!(file.read(&mut buf, 0), buf.len());
        buf
    }

    #[wasm_bindgen_test]
    fn unaligned_writes_span_chunks_and_read_back() {
        let mut file = PagedFile::default();
        file.write(&[7; 100], 0).unwrap();
        file.write(&[9; 5000], 4000).unwrap();
        assert_eq!(file.size(), 9000);
        let bytes = content(&file);
        assert_eq!(&bytes[..100], &[7; 100]);
        assert_eq!(&bytes[100..4000], &[0; 3900][..]);
        assert_eq!(&bytes[4000..], &[9; 5000][..]);
        let mut past = [1; 10];
        assert_eq!(file.read(&mut past, 8995), 5);
        assert_eq!(file.read(&mut past, 9000), 0);
    }

    #[wasm_bindgen_test]
    fn revert_returns_to_the_last_flush_after_writes_and_truncation() {
        let mut file = PagedFile::default();
        file.write(&[1; 3 * CHUNK_SIZE], 0).unwrap();
        let flush = file.begin_flush();
        assert_eq!(file.dirty_chunks().count(), 0);
        file.finish_flush(flush);
        let durable = content(&file);

        file.write(&[2; 10], 5000).unwrap();
        file.truncate(100).unwrap();
        file.write(&[3; 2 * CHUNK_SIZE], 6 * CHUNK_SIZE as u64)
            .unwrap();
        assert!(file.is_dirty());
        file.revert();
        assert!(!file.is_dirty());
        assert_eq!(content(&file), durable);
    }

    #[wasm_bindgen_test]
    fn a_failed_flush_keeps_the_older_pre_images() {
        let mut file = PagedFile::default();
        file.write(&[1; CHUNK_SIZE], 0).unwrap();
        let flush = file.begin_flush();
        file.finish_flush(flush);

        file.write(&[2; CHUNK_SIZE], 0).unwrap();
        let flush = file.begin_flush();
        assert_eq!(file.dirty_chunks().count(), 0);
        // A change while the flush is in flight, then the flush fails.
        file.write(&[3; CHUNK_SIZE], 0).unwrap();
        file.write(&[3; CHUNK_SIZE], CHUNK_SIZE as u64).unwrap();
        file.fail_flush(flush);
        assert_eq!(content(&file), vec![1; CHUNK_SIZE]);
    }

    #[wasm_bindgen_test]
    fn a_revert_during_a_flush_returns_to_the_state_it_writes() {
        let mut file = PagedFile::default();
        file.write(&[1; CHUNK_SIZE], 0).unwrap();
        let flush = file.begin_flush();
        file.finish_flush(flush);

        file.write(&[2; 2 * CHUNK_SIZE], 0).unwrap();
        let flush = file.begin_flush();
        file.write(&[3; 3 * CHUNK_SIZE], 0).unwrap();
        file.revert();
        assert_eq!(content(&file), vec![2; 2 * CHUNK_SIZE]);
        // If that flush fails, the file goes back to the one before.
        file.write(&[4; 3 * CHUNK_SIZE], 0).unwrap();
        file.fail_flush(flush);
        assert_eq!(content(&file), vec![1; CHUNK_SIZE]);
    }

    #[wasm_bindgen_test]
    fn shrinking_reports_the_chunks_to_delete_and_zeroes_the_tail() {
        let mut file = PagedFile::default();
        file.write(&[5; 3 * CHUNK_SIZE], 0).unwrap();
        let flush = file.begin_flush();
        file.finish_flush(flush);
        file.truncate(CHUNK_SIZE as u64 + 10).unwrap();
        assert_eq!(file.first_removed_chunk(), Some(2));
        file.truncate(3 * CHUNK_SIZE as u64).unwrap();
        let bytes = content(&file);
        assert_eq!(&bytes[CHUNK_SIZE + 10..], &[0; 2 * CHUNK_SIZE - 10][..]);
        assert_eq!(file.first_removed_chunk(), None);
    }
}
