//! Reading an institution's OWN images against an image task card: a folder with one sub-folder
//! per class of PNG or JPEG files (`read_image_folder`), or an IDX image + label pair
//! (`read_idx_private`, the MNIST format). Both check every image against the card's
//! `[image]` shape and classes and produce the layout the card declares: `height * width *
//! channels` values in [0, 1], row-major with the channel last (`r g b r g b ...` for RGB).
//! All or nothing, like the tabular readers: the first bad image or folder is an error naming it.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageError};

use crate::idx::images_from_idx;
use crate::private::LoadReport;
use crate::task::{ImageShape, TaskCard};
use crate::{read_file, DataError, DataKind, Dataset};

/// File extensions read as images (compared case-insensitively); the content decides PNG or JPEG.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The image shape of an image card, refusing a tabular card and channel counts without a layout.
fn image_shape(card: &TaskCard, what: &str) -> Result<ImageShape, DataError> {
    card.validate()?;
    let bad = |field: &str, problem: String| DataError::Card {
        file: "task card".into(),
        field: field.into(),
        problem,
    };
    let shape = card.image.ok_or_else(|| {
        bad(
            "image",
            format!(
                "task `{}` is a tabular task; its files are not read as {what}",
                card.name
            ),
        )
    })?;
    if !(1..=4).contains(&shape.channels) {
        return Err(bad(
            "image.channels",
            format!(
                "{} channels: images are read as 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels",
                shape.channels
            ),
        ));
    }
    Ok(shape)
}

/// Reads an institution's own image folder against an image `card`: `dir` holds one sub-folder
/// per class, named exactly like the class in `label.classes`; each holds PNG or JPEG files
/// (extensions in `IMAGE_EXTENSIONS`) of exactly the card's height and width. Images are read
/// class by class in class-id order, each folder's files sorted by name, so the dataset does not
/// depend on the directory order of the file system. Pixels are scaled to [0, 1] (8- and 16-bit);
/// with `channels = 1` colour images become their luminance (Rec. 709 weights), with 3 a grey
/// image is repeated in r, g and b; alpha is dropped unless the card asks for it (2 or 4).
///
/// Names starting with `.` (`.DS_Store`, `.thumbnails`) are skipped. Anything else is an error
/// naming it: a sub-folder that is not a class, a file at the top level or a folder inside a
/// class folder, a file with another extension, an image that does not decode or has another
/// size, and a folder without any image. A class without a folder (or with an empty one) is
/// allowed and listed in `LoadReport::absent_classes`.
pub fn read_image_folder(dir: &Path, card: &TaskCard) -> Result<(Dataset, LoadReport), DataError> {
    let shape = image_shape(card, "an image folder")?;
    let classes = card.classes();
    let bad = |path: &Path, expected: String, found: String| DataError::Image {
        file: path.display().to_string(),
        expected,
        found,
    };
    let mut folders: Vec<Option<PathBuf>> = vec![None; classes.len()];
    for (path, name, is_dir) in entries(dir)? {
        let class_list = || {
            format!(
                "a folder named after a class of task `{}` ({})",
                card.name,
                classes.join("|")
            )
        };
        if !is_dir {
            return Err(bad(&path, class_list(), "a file at the top level".into()));
        }
        match classes.iter().position(|c| *c == name) {
            Some(k) => folders[k] = Some(path),
            None => return Err(bad(&path, class_list(), format!("folder `{name}`"))),
        }
    }
    let dim = shape.height * shape.width * shape.channels;
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for (k, folder) in folders.iter().enumerate() {
        let Some(folder) = folder else { continue };
        for (path, name, is_dir) in entries(folder)? {
            if is_dir {
                return Err(bad(
                    &path,
                    format!("only PNG or JPEG files in the class folder `{}`", classes[k]),
                    "a folder".into(),
                ));
            }
            let ext = Path::new(&name)
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            if !ext.as_deref().is_some_and(|e| IMAGE_EXTENSIONS.contains(&e)) {
                return Err(bad(
                    &path,
                    format!("a PNG or JPEG file (.{})", IMAGE_EXTENSIONS.join(", .")),
                    format!("`{name}`"),
                ));
            }
            decode_into(&path, shape, &mut features)?;
            labels.push(k as u32);
        }
    }
    if labels.is_empty() {
        let found = if folders.iter().all(Option::is_none) {
            "no class folder"
        } else {
            "only empty class folders"
        };
        return Err(bad(
            dir,
            "at least one PNG or JPEG image in a folder named after a class".into(),
            found.into(),
        ));
    }
    debug_assert_eq!(features.len(), labels.len() * dim);
    let report = LoadReport::for_classes(dir.display().to_string(), classes, &labels);
    let ds = Dataset::new(
        card.name.clone(),
        features,
        labels,
        dim,
        DataKind::Image {
            height: shape.height,
            width: shape.width,
        },
        classes.to_vec(),
    )?;
    Ok((ds, report))
}

/// The entries of `dir` not starting with `.`, sorted by name: (path, name, is a folder).
fn entries(dir: &Path) -> Result<Vec<(PathBuf, String, bool)>, DataError> {
    let io = |path: &Path, source| DataError::Io {
        file: path.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Err(DataError::Image {
                file: path.display().to_string(),
                expected: "a UTF-8 file or folder name".into(),
                found: "a name that is not UTF-8".into(),
            });
        };
        if name.starts_with('.') {
            continue;
        }
        // Follows symbolic links, as opening the file would.
        let is_dir = std::fs::metadata(&path).map_err(|e| io(&path, e))?.is_dir();
        out.push((path, name, is_dir));
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// Decodes one image, checks its size and appends its `height * width * channels` values.
fn decode_into(path: &Path, shape: ImageShape, out: &mut Vec<f32>) -> Result<(), DataError> {
    let file = path.display().to_string();
    let bad = |expected: String, found: String| DataError::Image {
        file: file.clone(),
        expected,
        found,
    };
    let io = |source| DataError::Io {
        file: file.clone(),
        source,
    };
    let size = format!(
        "{}x{} pixels (height x width) as the task card says",
        shape.height, shape.width
    );
    let mut reader = image::io::Reader::open(path)
        .map_err(io)?
        .with_guessed_format()
        .map_err(io)?;
    // The card's size is the most a decoder may allocate for: a huge image is refused before decoding.
    let mut limits = image::io::Limits::default();
    limits.max_image_width = u32::try_from(shape.width).ok();
    limits.max_image_height = u32::try_from(shape.height).ok();
    reader.limits(limits);
    let img: DynamicImage = match reader.decode() {
        Ok(img) => img,
        Err(ImageError::Limits(_)) => {
            let found = match image::image_dimensions(path) {
                Ok((w, h)) => format!("{h}x{w}"),
                Err(e) => format!("a larger image ({e})"),
            };
            return Err(bad(size, found));
        }
        // The file opened: a read failing now is a truncated or broken image, not a missing one.
        Err(e) => {
            return Err(bad(
                "a PNG or JPEG image".into(),
                format!("bytes that do not decode: {e}"),
            ))
        }
    };
    let (h, w) = (img.height() as usize, img.width() as usize);
    if (h, w) != (shape.height, shape.width) {
        return Err(bad(size, format!("{h}x{w}")));
    }
    match shape.channels {
        1 => out.extend_from_slice(img.to_luma32f().as_raw()),
        2 => out.extend_from_slice(img.to_luma_alpha32f().as_raw()),
        3 => out.extend_from_slice(img.to_rgb32f().as_raw()),
        _ => out.extend_from_slice(img.to_rgba32f().as_raw()),
    }
    Ok(())
}

/// Reads an institution's own IDX pair (an IDX3 image file and an IDX1 label file, gzip or raw)
/// against an image `card` with one channel: the images must have the card's height and width,
/// and every label byte must be a class id (`< classes`). Pixels are scaled to [0, 1].
pub fn read_idx_private(images: &Path, labels: &Path, card: &TaskCard) -> Result<(Dataset, LoadReport), DataError> {
    let shape = image_shape(card, "IDX")?;
    let img_file = images.display().to_string();
    if shape.channels != 1 {
        return Err(DataError::Image {
            file: img_file,
            expected: format!("{} channels as the task card says", shape.channels),
            found: "an IDX file, which holds one grey channel".into(),
        });
    }
    let lab_file = labels.display().to_string();
    let (img, lab) = (read_file(images)?, read_file(labels)?);
    let ds = images_from_idx(
        &card.name,
        (&img, &img_file),
        (&lab, &lab_file),
        card.classes().to_vec(),
    )?;
    if ds.n == 0 {
        return Err(DataError::Image {
            file: img_file,
            expected: "at least one image".into(),
            found: "an IDX file of 0 images".into(),
        });
    }
    if let DataKind::Image { height, width } = ds.kind {
        if (height, width) != (shape.height, shape.width) {
            return Err(DataError::Image {
                file: img_file,
                expected: format!(
                    "{}x{} pixels (height x width) as the task card says",
                    shape.height, shape.width
                ),
                found: format!("{height}x{width} images"),
            });
        }
    }
    let report = LoadReport::for_classes(img_file, card.classes(), &ds.labels);
    Ok((ds, report))
}

/// Reads the public transfer set of an image `card` (format `idx`): one IDX3 file of grey images of the
/// card's shape, pixels scaled to [0, 1]. The public set is unlabelled (the teachers label it), so every
/// label of the returned dataset is 0; callers must not score anything against them.
pub fn read_public_idx(images: &Path, card: &TaskCard) -> Result<Dataset, DataError> {
    let shape = image_shape(card, "IDX")?;
    let file = images.display().to_string();
    if shape.channels != 1 {
        return Err(DataError::Image {
            file,
            expected: format!("{} channels as the task card says", shape.channels),
            found: "an IDX file, which holds one grey channel".into(),
        });
    }
    let arr = crate::idx::read_idx(&read_file(images)?, &file, 3)?;
    let (n, h, w) = (arr.dims[0], arr.dims[1], arr.dims[2]);
    if (h, w) != (shape.height, shape.width) || n == 0 {
        return Err(DataError::Image {
            file,
            expected: format!(
                "at least one {}x{} image (height x width) as the task card says",
                shape.height, shape.width
            ),
            found: format!("{n} images of {h}x{w}"),
        });
    }
    Ok(Dataset {
        name: card.name.clone(),
        features: arr.data.iter().map(|&p| f32::from(p) / 255.0).collect(),
        labels: vec![0; n],
        n,
        dim: h * w,
        num_classes: card.classes().len(),
        kind: DataKind::Image { height: h, width: w },
        class_names: card.classes().to_vec(),
        targets: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use image::{GrayImage, Rgb, RgbImage};

    use super::*;
    use crate::idx::write_idx;

    /// An image card: `height` x `width` x `channels`, classes `classes`.
    fn card(height: usize, width: usize, channels: usize, classes: &[&str]) -> TaskCard {
        let classes: Vec<String> = classes.iter().map(|c| format!("\"{c}\"")).collect();
        TaskCard::from_toml_str(
            &format!(
                "name = \"pets\"\nversion = 1\n[label]\nclasses = [{}]\n[image]\nheight = {height}\nwidth = {width}\n\
                 channels = {channels}\n[public]\nsha256 = \"{}\"\nrows = 5\nformat = \"image-folder\"\n",
                classes.join(", "),
                "ab".repeat(32)
            ),
            "pets.toml",
        )
        .expect("the test card is valid")
    }

    /// A 2x3 grey image whose pixels are `first, first+1, ...`.
    fn grey(first: u8) -> GrayImage {
        GrayImage::from_fn(3, 2, |x, y| image::Luma([first + (3 * y + x) as u8]))
    }

    fn folder() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    fn save(dir: &Path, rel: &str, img: &GrayImage) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("a file in a folder")).expect("mkdir");
        img.save(&path).expect("encode the test image");
    }

    fn refused(dir: &Path, card: &TaskCard) -> String {
        read_image_folder(dir, card)
            .expect_err("bad input must be refused")
            .to_string()
            .replace(&dir.display().to_string(), "DIR")
    }

    #[test]
    fn reads_class_folders_in_class_order_and_files_by_name() {
        let d = folder();
        save(d.path(), "dog/x.png", &grey(200));
        save(d.path(), "cat/b.PNG", &grey(10));
        save(d.path(), "cat/a.png", &grey(51));
        std::fs::write(d.path().join(".DS_Store"), b"junk").expect("write");
        std::fs::write(d.path().join("cat/.hidden"), b"junk").expect("write");
        let (ds, report) = read_image_folder(d.path(), &card(2, 3, 1, &["cat", "dog", "eel"])).expect("valid folder");
        assert_eq!((ds.n, ds.dim, ds.num_classes), (3, 6, 3));
        assert_eq!(ds.kind, DataKind::Image { height: 2, width: 3 });
        assert_eq!(ds.labels, vec![0, 0, 1]);
        // cat/a.png first: 51/255 = 0.2, row-major.
        let want: Vec<f32> = (51u8..57).map(|p| f32::from(p) / 255.0).collect();
        assert_eq!(ds.row(0), &want[..]);
        assert_eq!(ds.row(1)[0], 10.0 / 255.0);
        assert_eq!(ds.row(2)[5], 205.0 / 255.0);
        assert_eq!(report.class_counts, vec![2, 1, 0]);
        assert_eq!(report.absent_classes, vec!["eel".to_string()]);
        assert_eq!(report.rows, 3);
        // An empty class folder is like a missing one.
        std::fs::create_dir(d.path().join("eel")).expect("mkdir");
        let (_, report) = read_image_folder(d.path(), &card(2, 3, 1, &["cat", "dog", "eel"])).expect("valid");
        assert_eq!(report.absent_classes, vec!["eel".to_string()]);
    }

    #[test]
    fn rgb_is_channel_last_and_grey_colour_convert() {
        let d = folder();
        let rgb = RgbImage::from_fn(3, 2, |x, y| Rgb([255, (x * 50) as u8, (y * 100) as u8]));
        let path = d.path().join("cat/rgb.png");
        std::fs::create_dir_all(path.parent().expect("folder")).expect("mkdir");
        rgb.save(&path).expect("encode");
        save(d.path(), "dog/g.png", &grey(51));
        let (ds, _) = read_image_folder(d.path(), &card(2, 3, 3, &["cat", "dog"])).expect("valid");
        assert_eq!(ds.dim, 18);
        // Pixel (y=1, x=2) of the RGB image: r g b at (1 * 3 + 2) * 3.
        assert_eq!(&ds.row(0)[15..18], &[1.0, 100.0 / 255.0, 100.0 / 255.0]);
        // A grey image is repeated in r, g and b.
        assert_eq!(&ds.row(1)[..3], &[0.2, 0.2, 0.2]);
        // With one channel, a colour image becomes its luminance: pure red is about 0.2126.
        let (ds, _) = read_image_folder(d.path(), &card(2, 3, 1, &["cat", "dog"])).expect("valid");
        assert!((ds.row(0)[0] - 0.2126).abs() < 0.01, "{}", ds.row(0)[0]);
        // JPEG decodes too (lossy: a flat grey stays close to its value).
        let flat = GrayImage::from_pixel(3, 2, image::Luma([128]));
        save(d.path(), "dog/h.jpg", &flat);
        let (ds, _) = read_image_folder(d.path(), &card(2, 3, 1, &["cat", "dog"])).expect("valid");
        assert_eq!(ds.n, 3);
        assert!(
            ds.row(2).iter().all(|v| (v - 128.0 / 255.0).abs() < 0.03),
            "{:?}",
            ds.row(2)
        );
    }

    #[test]
    fn every_bad_folder_or_image_is_named() {
        let pets = card(2, 3, 1, &["cat", "dog"]);
        let classes = "a folder named after a class of task `pets` (cat|dog)";
        // Empty folder.
        let d = folder();
        assert_eq!(
            refused(d.path(), &pets),
            "DIR: expected at least one PNG or JPEG image in a folder named after a class, found no class folder"
        );
        std::fs::create_dir(d.path().join("cat")).expect("mkdir");
        assert!(refused(d.path(), &pets).ends_with("found only empty class folders"));
        // Unknown class folder.
        save(d.path(), "cow/a.png", &grey(0));
        assert_eq!(
            refused(d.path(), &pets),
            format!("DIR/cow: expected {classes}, found folder `cow`")
        );
        std::fs::remove_dir_all(d.path().join("cow")).expect("rm");
        // A file at the top level.
        std::fs::write(d.path().join("README.txt"), b"hi").expect("write");
        assert_eq!(
            refused(d.path(), &pets),
            format!("DIR/README.txt: expected {classes}, found a file at the top level")
        );
        std::fs::remove_file(d.path().join("README.txt")).expect("rm");
        // Wrong sizes: larger (refused before decoding) and smaller.
        save(d.path(), "cat/a.png", &GrayImage::new(4, 4));
        assert_eq!(
            refused(d.path(), &pets),
            "DIR/cat/a.png: expected 2x3 pixels (height x width) as the task card says, found 4x4"
        );
        save(d.path(), "cat/a.png", &GrayImage::new(3, 1));
        assert_eq!(
            refused(d.path(), &pets),
            "DIR/cat/a.png: expected 2x3 pixels (height x width) as the task card says, found 1x3"
        );
        // Corrupt PNG: the signature, then garbage.
        std::fs::write(d.path().join("cat/a.png"), b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDRgarbage").expect("write");
        let msg = refused(d.path(), &pets);
        assert!(
            msg.starts_with("DIR/cat/a.png: expected a PNG or JPEG image, found bytes that do not decode: "),
            "{msg}"
        );
        // A real PNG cut short.
        save(d.path(), "cat/a.png", &grey(0));
        let bytes = std::fs::read(d.path().join("cat/a.png")).expect("read back");
        std::fs::write(d.path().join("cat/a.png"), &bytes[..bytes.len() - 20]).expect("truncate");
        let msg = refused(d.path(), &pets);
        assert!(
            msg.starts_with("DIR/cat/a.png: expected a PNG or JPEG image, found bytes that do not decode"),
            "{msg}"
        );
        // Not an image file, and a folder inside a class folder.
        std::fs::remove_file(d.path().join("cat/a.png")).expect("rm");
        std::fs::write(d.path().join("cat/notes.txt"), b"hi").expect("write");
        assert_eq!(
            refused(d.path(), &pets),
            "DIR/cat/notes.txt: expected a PNG or JPEG file (.png, .jpg, .jpeg), found `notes.txt`"
        );
        std::fs::remove_file(d.path().join("cat/notes.txt")).expect("rm");
        std::fs::create_dir(d.path().join("cat/more")).expect("mkdir");
        assert_eq!(
            refused(d.path(), &pets),
            "DIR/cat/more: expected only PNG or JPEG files in the class folder `cat`, found a folder"
        );
        // Not a folder at all, and a tabular card.
        let err = read_image_folder(Path::new("/nonexistent/pets"), &pets).expect_err("missing");
        assert!(err.to_string().starts_with("/nonexistent/pets: cannot read"), "{err}");
        let tabular = crate::private::tests::card();
        let err = read_image_folder(d.path(), &tabular)
            .expect_err("tabular card")
            .to_string();
        assert!(err.contains("is a tabular task"), "{err}");
    }

    #[test]
    fn idx_pairs_are_checked_against_the_card() {
        let d = folder();
        let (img, lab) = (
            d.path().join("own-images-idx3-ubyte"),
            d.path().join("own-labels-idx1-ubyte"),
        );
        std::fs::write(&img, write_idx(&[2, 2, 3], &[51; 12])).expect("write");
        std::fs::write(&lab, write_idx(&[2], &[1, 0])).expect("write");
        let (ds, report) = read_idx_private(&img, &lab, &card(2, 3, 1, &["0", "1"])).expect("valid");
        assert_eq!((ds.n, ds.dim, ds.name.as_str()), (2, 6, "pets"));
        assert_eq!(ds.row(0)[0], 0.2);
        assert_eq!(report.class_counts, vec![1, 1]);
        let p = img.display();
        let err = read_idx_private(&img, &lab, &card(3, 2, 1, &["0", "1"])).expect_err("wrong shape");
        assert_eq!(
            err.to_string(),
            format!("{p}: expected 3x2 pixels (height x width) as the task card says, found 2x3 images")
        );
        let err = read_idx_private(&img, &lab, &card(2, 3, 3, &["0", "1"])).expect_err("RGB card");
        assert!(
            err.to_string().contains("an IDX file, which holds one grey channel"),
            "{err}"
        );
        std::fs::write(&img, write_idx(&[0, 2, 3], &[])).expect("write");
        std::fs::write(&lab, write_idx(&[0], &[])).expect("write");
        let err = read_idx_private(&img, &lab, &card(2, 3, 1, &["0", "1"])).expect_err("no images");
        assert!(
            err.to_string()
                .ends_with("expected at least one image, found an IDX file of 0 images"),
            "{err}"
        );
        std::fs::write(&img, write_idx(&[2, 2, 3], &[51; 12])).expect("write");
        std::fs::write(&lab, write_idx(&[2], &[1, 2])).expect("write");
        let err = read_idx_private(&img, &lab, &card(2, 3, 1, &["0", "1"])).expect_err("label 2");
        assert!(err.to_string().contains("expected a label in 0..2, found 2"), "{err}");
    }
}
