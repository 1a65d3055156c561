//! Draws the tray icons (one per backend state, plus an optional badge) and the app icon at any
//! pixel size, and encodes them as PNG / ICO bytes. Pure code: it does no I/O at all.
//!
//! Every state is told apart by colour *and* by a glyph, so it stays readable for colour-blind
//! users and on monochrome themes. Shapes are rasterised with `tiny-skia` at the requested size
//! (no scaling of a bitmap) from a 16-unit design grid: round and diagonal shapes are
//! anti-aliased, straight glyphs (the "!" and the ■) are snapped to whole pixels, so the icons are
//! crisp at the tray sizes 16, 20, 24, 32, 40 and 48 px. Each icon keeps a flat area of its exact
//! main colour ([`Look::color`]) so tests and screenshots can find it.

use tiny_skia::{
    BlendMode, FillRule, LineCap, LineJoin, Paint, Path, PathBuilder, Pixmap, Rect, Stroke,
    Transform,
};

/// Main colour of [`Look::Healthy`]: `#2E7D32`, a deep green (white on it: 5.1:1 contrast).
pub const GREEN: [u8; 3] = [0x2E, 0x7D, 0x32];
/// Main colour of [`Look::Starting`]: `#1E88E5`, a mid blue (3.3:1 on a light
/// tray, 4.4:1 on a dark one).
pub const BLUE: [u8; 3] = [0x1E, 0x88, 0xE5];
/// Main colour of [`Look::Unhealthy`]: `#FFB300`, amber (its dark glyph [`INK`]: 9:1).
pub const AMBER: [u8; 3] = [0xFF, 0xB3, 0x00];
/// Main colour of [`Look::Crashed`] and [`Look::Failed`]: `#D32F2F`, red (white on it: 5:1).
pub const RED: [u8; 3] = [0xD3, 0x2F, 0x2F];
/// Main colour of [`Look::Stopped`]: `#757575`, a neutral grey (white on it: 4.6:1).
pub const GREY: [u8; 3] = [0x75, 0x75, 0x75];
/// Colour of the badge dot ("strays or a port conflict"): `#FF6D00`, a vivid orange that no look
/// uses as its main colour.
pub const ORANGE: [u8; 3] = [0xFF, 0x6D, 0x00];
/// Colour of the light glyphs drawn on the green, red and grey discs.
pub const WHITE: [u8; 3] = [0xFF, 0xFF, 0xFF];
/// Colour of the dark glyph on the amber disc and of the badge outline: `#212121`.
pub const INK: [u8; 3] = [0x21, 0x21, 0x21];
/// Calm blue of the app icon's shield (left half): `#2F6DB5`.
pub const APP_BLUE: [u8; 3] = [0x2F, 0x6D, 0xB5];
/// Darker blue of the app icon's shield (right half): `#245A99`.
pub const APP_BLUE_DARK: [u8; 3] = [0x24, 0x5A, 0x99];

/// The sizes, in px, that trays ask for (16 and 32 at 100/125/150 % scaling, and 200 % of 16).
pub const TRAY_SIZES: [u32; 6] = [16, 20, 24, 32, 40, 48];
/// The sizes, in px, of the images in the app's .ico (`icons/app.ico`), smallest first.
pub const ICO_SIZES: [u32; 8] = [16, 20, 24, 32, 40, 48, 64, 256];

/// What the icon shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Look {
    /// Green disc with a white check mark ✓.
    Healthy,
    /// Blue open ring (an arc with a gap at the top right), transparent inside: "in progress".
    Starting,
    /// Amber disc with a dark exclamation mark "!".
    Unhealthy,
    /// Red disc with a white clockwise circular arrow ↻ (crashed, restarting after a backoff).
    Crashed,
    /// Red disc with a white cross ✕ (failed, given up).
    Failed,
    /// Grey disc with a white square ■ (stopped or stopping).
    Stopped,
    /// Red disc with a white exclamation mark "!" (the config has an error: nothing runs).
    ConfigError,
}

impl Look {
    /// Every look, in a stable order.
    pub const ALL: [Look; 7] = [
        Look::Healthy,
        Look::Starting,
        Look::Unhealthy,
        Look::Crashed,
        Look::Failed,
        Look::Stopped,
        Look::ConfigError,
    ];

    /// The main colour of this look: the disc (or ring) is filled with exactly this RGB value.
    pub fn color(self) -> [u8; 3] {
        match self {
            Look::Healthy => GREEN,
            Look::Starting => BLUE,
            Look::Unhealthy => AMBER,
            Look::Crashed | Look::Failed | Look::ConfigError => RED,
            Look::Stopped => GREY,
        }
    }

    /// The colour of this look's glyph ([`WHITE`] or [`INK`]); `None` for [`Look::Starting`],
    /// which has no glyph.
    pub fn glyph_color(self) -> Option<[u8; 3]> {
        match self {
            Look::Starting => None,
            Look::Unhealthy => Some(INK),
            Look::Healthy | Look::Crashed | Look::Failed | Look::Stopped | Look::ConfigError => {
                Some(WHITE)
            }
        }
    }
}

/// An RGBA8 image, row-major, size×size, straight (not premultiplied) alpha.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgba {
    /// Width and height in pixels.
    pub size: u32,
    /// `size * size * 4` bytes: R, G, B, A for each pixel, rows top to bottom.
    pub pixels: Vec<u8>,
}

impl Rgba {
    /// The RGBA value at column `x`, row `y`.
    ///
    /// # Panics
    /// If `x` or `y` is not below `size`.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 4] {
        assert!(
            x < self.size && y < self.size,
            "pixel ({x}, {y}) outside the image"
        );
        let i = (y as usize * self.size as usize + x as usize) * 4;
        [
            self.pixels[i],
            self.pixels[i + 1],
            self.pixels[i + 2],
            self.pixels[i + 3],
        ]
    }
}

/// Draws the tray icon for `look` at `size` px (a size of 0 is drawn as 1); `badge` adds a small
/// orange dot (with a thin dark outline and a transparent gap around it, so it separates from any
/// background) in the top-right corner, meaning "strays or a port conflict".
///
/// # Panics
/// Only if `size` is too large for one pixmap (tens of thousands of px).
pub fn render(look: Look, badge: bool, size: u32) -> Rgba {
    let mut c = Canvas::new(size);
    match look {
        Look::Starting => c.ring(look.color()),
        _ => c.disc(look.color()),
    }
    let ink = look.glyph_color().unwrap_or(WHITE);
    match look {
        Look::Healthy => c.check(ink),
        Look::Starting => {}
        Look::Unhealthy | Look::ConfigError => c.exclamation(ink),
        Look::Crashed => c.circular_arrow(ink),
        Look::Failed => c.cross(ink),
        Look::Stopped => c.square(ink),
    }
    if badge {
        c.badge();
    }
    c.finish()
}

/// The app icon (the brand, not a state): a calm blue two-tone shield with a white check mark,
/// at `size` px (a size of 0 is drawn as 1). Panics, like [`render`], only for absurd sizes.
pub fn app_icon(size: u32) -> Rgba {
    let mut c = Canvas::new(size);
    c.shield();
    c.finish()
}

/// Radius of the state disc (and outer radius of the ring), in 16ths of the icon size.
const DISC_RADIUS: f32 = 7.25;

/// A pixmap plus the scale from the 16-unit design grid to pixels.
struct Canvas {
    pixmap: Pixmap,
    /// Pixels per design unit (`size / 16`).
    k: f32,
}

impl Canvas {
    fn new(size: u32) -> Canvas {
        let size = size.max(1);
        Canvas {
            pixmap: Pixmap::new(size, size).expect("a non-zero square pixmap"),
            k: size as f32 / 16.0,
        }
    }

    fn finish(self) -> Rgba {
        let size = self.pixmap.width();
        Rgba {
            size,
            pixels: self.pixmap.take_demultiplied(),
        }
    }

    /// Design units to pixels.
    fn px(&self, v: f32) -> f32 {
        v * self.k
    }

    /// A design-unit coordinate on an axis-aligned edge, snapped to the pixel grid.
    fn snap(&self, v: f32) -> f32 {
        (v * self.k).round()
    }

    /// The width of a glyph stroke: 2 px at 16 px, scaling up, never below 1 px.
    fn stroke_width(&self) -> f32 {
        (2.0 * self.k).max(1.0)
    }

    fn paint(rgb: [u8; 3]) -> Paint<'static> {
        let mut paint = Paint::default();
        paint.set_color_rgba8(rgb[0], rgb[1], rgb[2], 255);
        paint.anti_alias = true;
        paint
    }

    fn fill(&mut self, path: Option<Path>, rgb: [u8; 3]) {
        if let Some(path) = path {
            self.pixmap.fill_path(
                &path,
                &Self::paint(rgb),
                FillRule::Winding,
                Transform::identity(),
                None,
            );
        }
    }

    /// Makes the area of `path` transparent again (anti-aliased).
    fn clear(&mut self, path: Option<Path>) {
        if let Some(path) = path {
            let mut paint = Self::paint(INK);
            paint.blend_mode = BlendMode::Clear;
            self.pixmap.fill_path(
                &path,
                &paint,
                FillRule::Winding,
                Transform::identity(),
                None,
            );
        }
    }

    fn stroke(&mut self, path: Option<Path>, width: f32, cap: LineCap, rgb: [u8; 3]) {
        if let Some(path) = path {
            let stroke = Stroke {
                width,
                line_cap: cap,
                line_join: LineJoin::Round,
                ..Stroke::default()
            };
            self.pixmap.stroke_path(
                &path,
                &Self::paint(rgb),
                &stroke,
                Transform::identity(),
                None,
            );
        }
    }

    /// A circle given in design units.
    fn circle(&self, cx: f32, cy: f32, r: f32) -> Option<Path> {
        PathBuilder::from_circle(self.px(cx), self.px(cy), self.px(r))
    }

    /// A rectangle given in design units, its edges snapped to whole pixels (at least 1 px).
    fn snapped_rect(&self, left: f32, top: f32, right: f32, bottom: f32) -> Option<Path> {
        let (l, t) = (self.snap(left), self.snap(top));
        let r = self.snap(right).max(l + 1.0);
        let b = self.snap(bottom).max(t + 1.0);
        Rect::from_ltrb(l, t, r, b).map(PathBuilder::from_rect)
    }

    /// A polyline given in design units.
    fn polyline(&self, points: &[(f32, f32)]) -> Option<Path> {
        let mut pb = PathBuilder::new();
        for (i, &(x, y)) in points.iter().enumerate() {
            if i == 0 {
                pb.move_to(self.px(x), self.px(y));
            } else {
                pb.line_to(self.px(x), self.px(y));
            }
        }
        pb.finish()
    }

    /// The state disc: centre of the icon, 0.75 design units of margin (at 16 px the edge
    /// pixels are anti-aliased, and rows 1–3 stay flat colour above a glyph reaching row 4).
    fn disc(&mut self, rgb: [u8; 3]) {
        self.fill(self.circle(8.0, 8.0, DISC_RADIUS), rgb);
    }

    /// The open ring of `Starting`: outer edge where the disc's edge is, 4 units thick (so a 3×3
    /// block of exact colour fits in it even at 16 px), with a quarter missing at the top right
    /// (where the badge sits).
    fn ring(&mut self, rgb: [u8; 3]) {
        let width = 4.0 * self.k;
        let radius = self.px(DISC_RADIUS) - width / 2.0;
        let c = self.px(8.0);
        let path = arc_path(c, c, radius, 0.0, 270.0);
        self.stroke(path, width, LineCap::Butt, rgb);
    }

    /// ✓
    fn check(&mut self, rgb: [u8; 3]) {
        let path = self.polyline(&[(4.4, 8.3), (7.0, 10.8), (11.6, 5.6)]);
        let w = self.stroke_width() * 1.1;
        self.stroke(path, w, LineCap::Round, rgb);
    }

    /// ✕: two diagonal bars with round ends, 7.8 units across.
    fn cross(&mut self, rgb: [u8; 3]) {
        let (a, b) = (5.2, 10.8);
        let mut pb = PathBuilder::new();
        pb.move_to(self.px(a), self.px(a));
        pb.line_to(self.px(b), self.px(b));
        pb.move_to(self.px(b), self.px(a));
        pb.line_to(self.px(a), self.px(b));
        let w = self.stroke_width() * 1.1;
        self.stroke(pb.finish(), w, LineCap::Round, rgb);
    }

    /// "!": a bar and a dot, both on whole pixels.
    fn exclamation(&mut self, rgb: [u8; 3]) {
        let w = self.stroke_width().round().max(1.0);
        let left = (self.px(8.0) - w / 2.0).round();
        let bar_top = self.snap(3.0);
        let bar_bottom = self.snap(9.0);
        let dot_top = self.snap(11.0);
        let bar = Rect::from_ltrb(left, bar_top, left + w, bar_bottom).map(PathBuilder::from_rect);
        let dot = Rect::from_ltrb(left, dot_top, left + w, dot_top + w).map(PathBuilder::from_rect);
        self.fill(bar, rgb);
        self.fill(dot, rgb);
    }

    /// ■
    fn square(&mut self, rgb: [u8; 3]) {
        self.fill(self.snapped_rect(5.0, 5.0, 11.0, 11.0), rgb);
    }

    /// ↻: an arc from the top clockwise round the right and bottom to the left side, ending in
    /// an arrowhead that points clockwise (up). The opening is at the top left, so the badge
    /// (top right) only trims the arc, never the head.
    fn circular_arrow(&mut self, rgb: [u8; 3]) {
        let c = self.px(8.0);
        let r = self.px(3.7);
        let w = self.stroke_width();
        let (start, end) = (-75.0_f32, 195.0_f32);
        self.stroke(arc_path(c, c, r, start, end), w, LineCap::Butt, rgb);
        // Arrowhead: base across the arc's end, tip along the clockwise tangent.
        let t = end.to_radians();
        let (nx, ny) = (t.cos(), t.sin()); // outward normal
        let (tx, ty) = (-ny, nx); // clockwise tangent (y points down)
        let (px, py) = (c + r * nx, c + r * ny);
        let half = self.px(2.8);
        let len = self.px(3.2);
        let back = w * 0.2; // overlap the arc a little so no seam shows
        let mut pb = PathBuilder::new();
        pb.move_to(px + half * nx - back * tx, py + half * ny - back * ty);
        pb.line_to(px + len * tx, py + len * ty);
        pb.line_to(px - half * nx - back * tx, py - half * ny - back * ty);
        pb.close();
        self.fill(pb.finish(), rgb);
    }

    /// The badge: a transparent moat, a dark outline and an orange dot, top right.
    fn badge(&mut self) {
        let (cx, cy) = (12.6, 3.4);
        self.clear(self.circle(cx, cy, 3.9));
        self.fill(self.circle(cx, cy, 3.1), INK);
        self.fill(self.circle(cx, cy, 2.3), ORANGE);
    }

    /// The app icon: a two-tone shield with a white check.
    fn shield(&mut self) {
        // Outline in design units; the right half is drawn again in the darker blue.
        let top = 1.0;
        let shoulder = 2.6;
        let (l, r) = (2.2, 13.8);
        let tip = 15.2;
        let mid = 8.0;
        let build = |half_right: bool| -> Option<Path> {
            let k = self.k;
            let p = |v: f32| v * k;
            let mut pb = PathBuilder::new();
            pb.move_to(p(mid), p(top));
            // top edge to the right shoulder
            pb.cubic_to(p(10.0), p(2.2), p(12.0), p(shoulder), p(r), p(shoulder));
            pb.line_to(p(r), p(7.4));
            pb.cubic_to(p(r), p(11.2), p(11.2), p(13.6), p(mid), p(tip));
            if half_right {
                pb.close();
                return pb.finish();
            }
            pb.cubic_to(p(4.8), p(13.6), p(l), p(11.2), p(l), p(7.4));
            pb.line_to(p(l), p(shoulder));
            pb.cubic_to(p(4.0), p(shoulder), p(6.0), p(2.2), p(mid), p(top));
            pb.close();
            pb.finish()
        };
        let (whole, right) = (build(false), build(true));
        self.fill(whole, APP_BLUE);
        self.fill(right, APP_BLUE_DARK);
        let check = self.polyline(&[(4.9, 8.2), (7.2, 10.5), (11.2, 5.9)]);
        let w = self.stroke_width() * 1.05;
        self.stroke(check, w, LineCap::Round, WHITE);
    }
}

/// A circular arc in pixels, from angle `a0` to `a1` degrees (0° = +x, increasing clockwise on
/// screen because y points down), as cubic Béziers of at most 90° each.
fn arc_path(cx: f32, cy: f32, r: f32, a0: f32, a1: f32) -> Option<Path> {
    let segments = ((a1 - a0).abs() / 90.0).ceil().max(1.0) as usize;
    let step = (a1 - a0).to_radians() / segments as f32;
    let handle = 4.0 / 3.0 * (step / 4.0).tan() * r;
    let mut pb = PathBuilder::new();
    let mut a = a0.to_radians();
    pb.move_to(cx + r * a.cos(), cy + r * a.sin());
    for _ in 0..segments {
        let b = a + step;
        let (ca, sa, cb, sb) = (a.cos(), a.sin(), b.cos(), b.sin());
        pb.cubic_to(
            cx + r * ca - handle * sa,
            cy + r * sa + handle * ca,
            cx + r * cb + handle * sb,
            cy + r * sb - handle * cb,
            cx + r * cb,
            cy + r * sb,
        );
        a = b;
    }
    pb.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The PNG and .ico export: `icons/` holds pre-rendered files (regenerated by
    // `regenerate_icons_dir` below), so the shipped program needs no PNG encoder.

    /// A Windows .ico holding PNG-compressed images of [`app_icon`] at each of [`ICO_SIZES`]
    /// (16, 20, 24, 32, 40, 48, 64 and 256 px). PNG entries need Windows Vista or later.
    fn app_icon_ico() -> Vec<u8> {
        let pngs: Vec<(u32, Vec<u8>)> = ICO_SIZES
            .iter()
            .map(|&s| (s, to_png(&app_icon(s))))
            .collect();
        // ICONDIR (6 bytes) + one ICONDIRENTRY (16 bytes) per image, then the PNG streams.
        let mut out = Vec::new();
        out.extend_from_slice(&0u16.to_le_bytes()); // reserved
        out.extend_from_slice(&1u16.to_le_bytes()); // type: icon
        out.extend_from_slice(&(pngs.len() as u16).to_le_bytes());
        let mut offset = 6 + 16 * pngs.len();
        for (size, png) in &pngs {
            let dim = if *size >= 256 { 0 } else { *size as u8 }; // 0 means 256
            out.extend_from_slice(&[dim, dim, 0, 0]); // width, height, palette size, reserved
            out.extend_from_slice(&1u16.to_le_bytes()); // colour planes
            out.extend_from_slice(&32u16.to_le_bytes()); // bits per pixel
            out.extend_from_slice(&(png.len() as u32).to_le_bytes());
            out.extend_from_slice(&(offset as u32).to_le_bytes());
            offset += png.len();
        }
        for (_, png) in &pngs {
            out.extend_from_slice(png);
        }
        out
    }

    /// Encodes an RGBA image as PNG bytes (8-bit RGBA, straight alpha), using the `png` crate.
    ///
    /// # Panics
    /// If `image.pixels` is not `size * size * 4` bytes long or `size` is 0.
    fn to_png(image: &Rgba) -> Vec<u8> {
        encode_png(image.size, image.size, &image.pixels)
    }

    /// Encodes a `width`×`height` RGBA8 buffer as PNG; panics on a wrong length or a zero size.
    fn encode_png(width: u32, height: u32, pixels: &[u8]) -> Vec<u8> {
        let want = width as usize * height as usize * 4;
        assert!(
            want > 0 && pixels.len() == want,
            "a {width}×{height} RGBA image needs {want} bytes, it has {}",
            pixels.len()
        );
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .expect("writing a PNG header to memory cannot fail");
        writer
            .write_image_data(pixels)
            .expect("the pixel buffer length was checked");
        writer
            .finish()
            .expect("finishing a PNG in memory cannot fail");
        out
    }

    const LOOKS: [Look; 7] = Look::ALL;

    fn rgb_at(img: &Rgba, x: u32, y: u32) -> Option<[u8; 3]> {
        let p = img.pixel(x, y);
        (p[3] == 255).then_some([p[0], p[1], p[2]])
    }

    /// Whether an n×n block of opaque pixels of exactly `rgb` exists.
    fn has_block(img: &Rgba, rgb: [u8; 3], n: u32) -> bool {
        (0..=img.size.saturating_sub(n)).any(|y0| {
            (0..=img.size.saturating_sub(n)).any(|x0| {
                (y0..y0 + n).all(|y| (x0..x0 + n).all(|x| rgb_at(img, x, y) == Some(rgb)))
            })
        })
    }

    fn count(img: &Rgba, rgb: [u8; 3]) -> usize {
        img.pixels
            .chunks_exact(4)
            .filter(|p| p[3] == 255 && p[..3] == rgb)
            .count()
    }

    fn all_sizes() -> impl Iterator<Item = u32> {
        TRAY_SIZES.into_iter().chain([1, 2, 8, 17, 64, 256])
    }

    #[test]
    fn every_combination_has_the_right_size_and_transparent_corners() {
        for look in LOOKS {
            for badge in [false, true] {
                for size in all_sizes() {
                    let img = render(look, badge, size);
                    assert_eq!(img.size, size);
                    assert_eq!(img.pixels.len(), (size * size * 4) as usize);
                    if size < 16 {
                        continue;
                    }
                    let m = size - 1;
                    for (x, y) in [(0, 0), (0, m), (m, m), (m, 0)] {
                        if badge && (x, y) == (m, 0) {
                            continue;
                        }
                        assert_eq!(
                            img.pixel(x, y)[3],
                            0,
                            "{look:?} badge={badge} size={size} corner ({x},{y})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn zero_size_is_drawn_as_one_pixel() {
        assert_eq!(render(Look::Healthy, false, 0).size, 1);
        assert_eq!(app_icon(0).pixels.len(), 4);
    }

    #[test]
    fn each_look_has_a_flat_block_of_its_exact_colour() {
        for look in LOOKS {
            for badge in [false, true] {
                for size in [16, 20, 24, 32, 40, 48, 64] {
                    let img = render(look, badge, size);
                    assert!(
                        has_block(&img, look.color(), 3),
                        "{look:?} badge={badge} at {size} px has no 3×3 block of {:?}",
                        look.color()
                    );
                }
            }
        }
    }

    #[test]
    fn the_block_finder_can_fail() {
        let img = render(Look::Healthy, false, 16);
        assert!(!has_block(&img, BLUE, 3));
        assert!(!has_block(&img, GREEN, 15));
    }

    #[test]
    fn badge_adds_orange_only_when_asked() {
        for look in LOOKS {
            assert_ne!(look.color(), ORANGE);
            for size in TRAY_SIZES {
                assert_eq!(count(&render(look, false, size), ORANGE), 0);
                let with = render(look, true, size);
                assert!(count(&with, ORANGE) > 0, "{look:?} at {size} px");
                for (i, p) in with.pixels.chunks_exact(4).enumerate() {
                    let (x, y) = (i as u32 % size, i as u32 / size);
                    if p[..3] == ORANGE {
                        assert!(
                            x >= size / 2 && y < size / 2,
                            "{look:?} at {size} px: orange at ({x},{y}) is not top right"
                        );
                    }
                }
            }
        }
        assert_ne!(ORANGE, INK);
        assert_ne!(ORANGE, WHITE);
    }

    #[test]
    fn looks_are_distinct() {
        for size in TRAY_SIZES {
            for badge in [false, true] {
                let imgs: Vec<Rgba> = LOOKS.iter().map(|&l| render(l, badge, size)).collect();
                for i in 0..imgs.len() {
                    for j in i + 1..imgs.len() {
                        assert_ne!(
                            imgs[i], imgs[j],
                            "{:?} and {:?} look the same at {size} px",
                            LOOKS[i], LOOKS[j]
                        );
                    }
                }
            }
            assert_ne!(
                render(Look::Healthy, false, size),
                render(Look::Healthy, true, size)
            );
        }
    }

    #[test]
    fn glyphs_are_drawn_and_contrast() {
        for look in LOOKS {
            for size in TRAY_SIZES {
                let img = render(look, false, size);
                match look.glyph_color() {
                    None => {
                        // A ring: the centre is see-through, and nothing white is drawn.
                        let c = size / 2;
                        assert_eq!(img.pixel(c, c)[3], 0, "{look:?} at {size} px");
                        assert_eq!(count(&img, WHITE), 0);
                    }
                    Some(ink) => {
                        // A 16 px glyph with 2 px strokes covers at least ~8 exact pixels.
                        let min = (size * size / 32) as usize;
                        let n = count(&img, ink);
                        assert!(n >= min, "{look:?} at {size} px: {n} glyph pixels < {min}");
                        let centre = img.pixel(size / 2, size / 2);
                        assert_eq!(centre[3], 255, "{look:?}: the disc is filled");
                    }
                }
            }
        }
        // Contrast: the glyph differs strongly from the disc (sum of channel differences).
        for look in LOOKS {
            if let Some(ink) = look.glyph_color() {
                let d: i32 = (0..3)
                    .map(|i| (ink[i] as i32 - look.color()[i] as i32).abs())
                    .sum();
                assert!(d > 300, "{look:?}: glyph too close to the disc colour");
            }
        }
    }

    #[test]
    fn main_colours_are_distinct() {
        let all = [GREEN, BLUE, AMBER, RED, GREY, ORANGE, WHITE, INK];
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j]);
            }
        }
    }

    fn decode(bytes: &[u8]) -> (u32, u32, png::ColorType, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().expect("a valid PNG header");
        let mut buf = vec![0; reader.output_buffer_size().expect("a sane size")];
        let info = reader.next_frame(&mut buf).expect("valid PNG data");
        buf.truncate(info.buffer_size());
        (info.width, info.height, info.color_type, buf)
    }

    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

    #[test]
    fn png_round_trips() {
        for (img, what) in [
            (render(Look::Crashed, true, 20), "crashed"),
            (render(Look::Starting, false, 16), "starting"),
            (app_icon(48), "app"),
        ] {
            let bytes = to_png(&img);
            assert_eq!(bytes[..8], PNG_SIGNATURE, "{what}");
            let (w, h, color, pixels) = decode(&bytes);
            assert_eq!((w, h, color), (img.size, img.size, png::ColorType::Rgba));
            assert_eq!(pixels, img.pixels, "{what}");
        }
    }

    #[test]
    #[should_panic(expected = "needs")]
    fn png_rejects_a_wrong_buffer() {
        to_png(&Rgba {
            size: 4,
            pixels: vec![0; 10],
        });
    }

    #[test]
    fn ico_lists_eight_png_images_of_the_right_sizes() {
        let ico = app_icon_ico();
        let u16_at = |i: usize| u16::from_le_bytes([ico[i], ico[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([ico[i], ico[i + 1], ico[i + 2], ico[i + 3]]);
        assert_eq!((u16_at(0), u16_at(2), u16_at(4)), (0, 1, 8));
        let mut end = 6 + 16 * 8;
        for (n, &size) in ICO_SIZES.iter().enumerate() {
            let e = 6 + 16 * n;
            let dim = if size == 256 { 0 } else { size as u8 };
            assert_eq!((ico[e], ico[e + 1]), (dim, dim), "entry {n}");
            assert_eq!((u16_at(e + 4), u16_at(e + 6)), (1, 32), "entry {n}");
            let (len, off) = (u32_at(e + 8) as usize, u32_at(e + 12) as usize);
            assert_eq!(off, end, "entry {n} is not packed after the previous one");
            end = off + len;
            let png = &ico[off..end];
            assert_eq!(png[..8], PNG_SIGNATURE);
            let (w, h, _, pixels) = decode(png);
            assert_eq!((w, h), (size, size));
            assert_eq!(pixels, app_icon(size).pixels);
        }
        assert_eq!(end, ico.len());
    }

    #[test]
    fn app_icon_is_a_blue_shield_with_a_white_check() {
        for size in ICO_SIZES {
            let img = app_icon(size);
            assert_eq!(img.pixels.len(), (size * size * 4) as usize);
            assert_eq!(img.pixel(0, 0)[3], 0);
            assert_eq!(img.pixel(size - 1, size - 1)[3], 0);
            assert!(has_block(&img, APP_BLUE, 2), "{size}");
            assert!(count(&img, WHITE) > 0, "{size}");
        }
    }

    /// Composites `img` over an opaque background colour.
    fn over(img: &Rgba, x: u32, y: u32, bg: [u8; 3]) -> [u8; 3] {
        let p = img.pixel(x, y);
        let a = p[3] as u32;
        std::array::from_fn(|i| ((p[i] as u32 * a + bg[i] as u32 * (255 - a) + 127) / 255) as u8)
    }

    /// A contact sheet: one row per look plus the app icon; for each background colour, the
    /// icon at each of `sizes` without and then with the badge, nearest-neighbour × `zoom`.
    /// Returns (width, height, RGBA pixels).
    fn preview_sheet(sizes: &[u32], zoom: u32, backgrounds: &[[u8; 3]]) -> (u32, u32, Vec<u8>) {
        const GAP: u32 = 8;
        let largest = sizes.iter().copied().max().unwrap_or(0);
        let block_w: u32 = 2 * sizes.iter().map(|s| s * zoom + GAP).sum::<u32>() + 2 * GAP;
        let width = block_w * backgrounds.len() as u32;
        let row_h = largest * zoom + GAP;
        let rows = LOOKS.len() as u32 + 1;
        let height = row_h * rows + GAP;
        let mut pixels = vec![0; (width * height * 4) as usize];
        for (b, &bg) in backgrounds.iter().enumerate() {
            let left = b as u32 * block_w;
            for y in 0..height {
                for x in left..left + block_w {
                    let i = ((y * width + x) * 4) as usize;
                    pixels[i..i + 4].copy_from_slice(&[bg[0], bg[1], bg[2], 255]);
                }
            }
            for row in 0..rows {
                let mut x0 = left + GAP;
                let y0 = GAP + row * row_h;
                for badge in [false, true] {
                    for &s in sizes {
                        let img = match LOOKS.get(row as usize) {
                            Some(&look) => render(look, badge, s),
                            None => app_icon(s),
                        };
                        for y in 0..s * zoom {
                            for x in 0..s * zoom {
                                let c = over(&img, x / zoom, y / zoom, bg);
                                let i = (((y0 + y) * width + x0 + x) * 4) as usize;
                                pixels[i..i + 4].copy_from_slice(&[c[0], c[1], c[2], 255]);
                            }
                        }
                        x0 += s * zoom + GAP;
                    }
                    x0 += GAP;
                }
            }
        }
        (width, height, pixels)
    }

    /// Writes preview sheets to judge legibility: `$ICON_PREVIEW` (default: in the temp dir)
    /// has every look × {no badge, badge} × 16, 24, 32 and 48 px at 4× on a light tray colour,
    /// `…-dark.png` the same on a dark one, and `…-16.png` a close-up of 16 and 20 px at 8× on
    /// both. The app icon is the last row.
    #[test]
    #[ignore = "writes preview PNGs; run with `cargo test -- --ignored preview`"]
    fn preview() {
        let path = std::env::var_os("ICON_PREVIEW")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("backend-warden-icon-preview.png"));
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        let (light, dark) = ([0xF3, 0xF3, 0xF3], [0x20, 0x20, 0x20]);
        /// (file, sizes, zoom, background colours)
        type Sheet<'a> = (std::path::PathBuf, &'a [u32], u32, &'a [[u8; 3]]);
        let sheets: [Sheet; 3] = [
            (path.clone(), &[16, 24, 32, 48], 4, &[light]),
            (
                path.with_file_name(format!("{stem}-dark.png")),
                &[16, 24, 32, 48],
                4,
                &[dark],
            ),
            (
                path.with_file_name(format!("{stem}-16.png")),
                &[16, 20],
                8,
                &[light, dark],
            ),
        ];
        for (file, sizes, zoom, backgrounds) in sheets {
            let (w, h, pixels) = preview_sheet(sizes, zoom, backgrounds);
            std::fs::write(&file, encode_png(w, h, &pixels)).expect("write a preview");
            println!("preview written to {}", file.display());
        }
    }

    /// Regenerates `icons/app.ico` and `icons/app.png` (256 px) in the crate directory.
    #[test]
    #[ignore = "writes icons/; run with `cargo test -- --ignored regenerate`"]
    fn regenerate_icons_dir() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../icons");
        std::fs::create_dir_all(&dir).expect("create icons/");
        std::fs::write(dir.join("app.ico"), app_icon_ico()).expect("write icons/app.ico");
        std::fs::write(dir.join("app.png"), to_png(&app_icon(256))).expect("write icons/app.png");
    }
}
