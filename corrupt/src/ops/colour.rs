//! Colour: the HSV round trip of brightness and saturate.

use super::FloatImage;

/// Changes each pixel's HSV value and saturation and converts back, as scikit-image's
/// `rgb2hsv` / `hsv2rgb` round trip: `V' = clip(V + value_add)`, `S' = clip(S * sat_mul +
/// sat_add)` (both clipped to `[0, 1]`), hue unchanged (grey pixels have hue 0, red).
/// `img` must have 3 channels.
pub fn hsv_adjust(img: &mut FloatImage, value_add: f32, sat_mul: f32, sat_add: f32) {
    for p in img.data.chunks_exact_mut(3) {
        let (r, g, b) = (p[0], p[1], p[2]);
        let mx = r.max(g).max(b);
        let mn = r.min(g).min(b);
        let delta = mx - mn;
        let s = if mx > 0.0 { delta / mx } else { 0.0 };
        let v2 = (mx + value_add).clamp(0.0, 1.0);
        let s2 = (s * sat_mul + sat_add).clamp(0.0, 1.0);
        if delta > 0.0 {
            for ch in p.iter_mut() {
                let t = (mx - *ch) / delta;
                *ch = v2 - v2 * s2 * t;
            }
        } else {
            p[0] = v2;
            p[1] = v2 * (1.0 - s2);
            p[2] = v2 * (1.0 - s2);
        }
    }
}
