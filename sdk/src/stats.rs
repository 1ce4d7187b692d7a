//! Statistics the built-in policies use, for policy authors too.
//!
//! Conventions follow Beloglazov & Buyya (CCPE 2012) as encoded in CloudSim 3.0.3, so the
//! built-in policies decide as that simulator does: the median interpolates between the two
//! middle values; the IQR takes the quartiles at `round(p × (n + 1))`; regressions use
//! `x = 1..=n`, oldest sample first.

/// Samples of `row` that are not NaN, oldest first.
pub fn valid(row: &[f32]) -> Vec<f64> {
    row.iter().filter(|v| !v.is_nan()).map(|&v| f64::from(v)).collect()
}

/// Replaces `out` with the samples of `row` that are not NaN, oldest first (no allocation once
/// `out` has grown to the window size).
pub fn valid_into(row: &[f32], out: &mut Vec<f64>) {
    out.clear();
    out.extend(row.iter().filter(|v| !v.is_nan()).map(|&v| f64::from(v)));
}

/// The newest sample that is not NaN.
pub fn last_valid(row: &[f32]) -> Option<f32> {
    row.iter().rev().copied().find(|v| !v.is_nan())
}

fn sorted(data: &[f64]) -> Vec<f64> {
    let mut s = data.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// Median; NaN for no data.
pub fn median(data: &[f64]) -> f64 {
    let s = sorted(data);
    let n = s.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => s[n / 2],
        _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Median absolute deviation: the median of `|x − median(x)|`.
pub fn mad(data: &[f64]) -> f64 {
    let m = median(data);
    let dev: Vec<f64> = data.iter().map(|x| (x - m).abs()).collect();
    median(&dev)
}

/// Interquartile range, quartiles at positions `round(0.25 (n+1))` and `round(0.75 (n+1))`
/// (1-based) of the sorted data; NaN for fewer than 3 samples.
pub fn iqr(data: &[f64]) -> f64 {
    let n = data.len();
    if n < 3 {
        return f64::NAN;
    }
    let s = sorted(data);
    let pos = |p: f64| ((p * (n as f64 + 1.0)).round() as usize).clamp(1, n) - 1;
    s[pos(0.75)] - s[pos(0.25)]
}

/// Ordinary least squares of `y` on `x = 1..=n`: `(intercept, slope)`. `None` for n < 2.
pub fn linear_fit(y: &[f64]) -> Option<(f64, f64)> {
    let n = y.len();
    if n < 2 {
        return None;
    }
    let (mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0);
    for (i, &yi) in y.iter().enumerate() {
        let x = (i + 1) as f64;
        sx += x;
        sy += yi;
        sxx += x * x;
        sxy += x * yi;
    }
    let nf = n as f64;
    let det = nf * sxx - sx * sx;
    let slope = (nf * sxy - sx * sy) / det;
    let intercept = (sy - slope * sx) / nf;
    (intercept.is_finite() && slope.is_finite()).then_some((intercept, slope))
}

/// Weighted least squares of `y` on `x = 1..=n`: `(intercept, slope)`.
pub fn weighted_linear_fit(y: &[f64], w: &[f64]) -> Option<(f64, f64)> {
    let n = y.len();
    if n < 2 || w.len() != n {
        return None;
    }
    let (mut sw, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (i, (&yi, &wi)) in y.iter().zip(w).enumerate() {
        let x = (i + 1) as f64;
        sw += wi;
        sx += wi * x;
        sy += wi * yi;
        sxx += wi * x * x;
        sxy += wi * x * yi;
    }
    let det = sw * sxx - sx * sx;
    if det.abs() < 1e-12 || !det.is_finite() {
        return None;
    }
    let slope = (sw * sxy - sx * sy) / det;
    let intercept = (sy - slope * sx) / sw;
    (intercept.is_finite() && slope.is_finite()).then_some((intercept, slope))
}

/// Tricube weights for `n` points at `x = 1..=n`, largest for the newest point (local
/// regression around the end of the window, Cleveland 1979).
pub fn tricube_weights(n: usize) -> Vec<f64> {
    if n < 2 {
        return vec![1.0; n];
    }
    let span = n as f64; // distance at which the weight reaches zero, just past the oldest point
    (0..n)
        .map(|i| {
            let d = (n - 1 - i) as f64 / span;
            (1.0 - d * d * d).powi(3)
        })
        .collect()
}

/// Robust local regression (LOESS, Cleveland 1979): a tricube-weighted fit, then up to three
/// robustness iterations re-weighting each point by the bisquare `(1 − (r / 6s)²)²` of its
/// residual `r`, `s` being the median absolute residual. Stops early once the residuals vanish.
pub fn robust_linear_fit(y: &[f64]) -> Option<(f64, f64)> {
    let w = tricube_weights(y.len());
    let (mut a, mut b) = weighted_linear_fit(y, &w)?;
    let mut robust = vec![0.0; y.len()];
    let mut abs = vec![0.0; y.len()];
    for _ in 0..3 {
        for (i, yi) in y.iter().enumerate() {
            abs[i] = (yi - (a + b * (i + 1) as f64)).abs();
        }
        let s6 = 6.0 * median(&abs);
        if s6 <= 1e-12 || !s6.is_finite() {
            break;
        }
        for i in 0..y.len() {
            let u = abs[i] / s6;
            robust[i] = if u < 1.0 { (1.0 - u * u).powi(2) * w[i] } else { 0.0 };
        }
        match weighted_linear_fit(y, &robust) {
            Some(fit) => (a, b) = fit,
            None => break,
        }
    }
    Some((a, b))
}

/// Coefficient of determination R² of the multiple linear regression (with intercept) of `y`
/// on the columns `xs` (each as long as `y`). `None` when there are not more observations than
/// coefficients, or the system is singular.
pub fn r_squared(y: &[f64], xs: &[&[f64]]) -> Option<f64> {
    let m = y.len();
    let p = xs.len() + 1;
    if m <= p || xs.iter().any(|x| x.len() != m) {
        return None;
    }
    // Normal equations (XᵀX) β = Xᵀy with X = [1 | xs].
    let col = |j: usize, r: usize| if j == 0 { 1.0 } else { xs[j - 1][r] };
    let mut a = vec![vec![0.0; p + 1]; p];
    for (i, row) in a.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate().take(p) {
            *cell = (0..m).map(|r| col(i, r) * col(j, r)).sum();
        }
        row[p] = (0..m).map(|r| col(i, r) * y[r]).sum();
    }
    let beta = solve(a)?;
    let mean = y.iter().sum::<f64>() / m as f64;
    let (mut ss_res, mut ss_tot) = (0.0, 0.0);
    for (r, &yr) in y.iter().enumerate() {
        let fit: f64 = (0..p).map(|j| beta[j] * col(j, r)).sum();
        ss_res += (yr - fit).powi(2);
        ss_tot += (yr - mean).powi(2);
    }
    if ss_tot <= 0.0 {
        return None;
    }
    let r2 = 1.0 - ss_res / ss_tot;
    r2.is_finite().then_some(r2)
}

/// R² of every column regressed (with intercept) on all the other columns, at once: with `S`
/// the columns' covariance matrix, `R²ᵢ = 1 − 1 / (Sᵢᵢ · (S⁻¹)ᵢᵢ)`. One `n × n` inversion instead of
/// `n` regressions (what makes maximum-correlation selection affordable on a host with dozens of
/// VMs). `None` when there are not more observations than columns, a column is constant, or
/// the columns are linearly dependent.
pub fn r_squared_each(cols: &[&[f64]]) -> Option<Vec<f64>> {
    let n = cols.len();
    let m = cols.first()?.len();
    if m <= n || cols.iter().any(|c| c.len() != m) {
        return None;
    }
    let means: Vec<f64> = cols.iter().map(|c| c.iter().sum::<f64>() / m as f64).collect();
    // Covariance (unscaled: the factor cancels in Sᵢᵢ · (S⁻¹)ᵢᵢ), augmented with the identity.
    let mut a = vec![vec![0.0; 2 * n]; n];
    for i in 0..n {
        for j in i..n {
            let v: f64 = (0..m).map(|r| (cols[i][r] - means[i]) * (cols[j][r] - means[j])).sum();
            a[i][j] = v;
            a[j][i] = v;
        }
        a[i][n + i] = 1.0;
    }
    let diag: Vec<f64> = (0..n).map(|i| a[i][i]).collect();
    let scale = diag.iter().copied().fold(0.0f64, f64::max);
    if diag.iter().any(|&d| d <= 0.0) {
        return None;
    }
    // Gauss-Jordan with partial pivoting.
    for c in 0..n {
        let pivot = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[pivot][c].abs() <= 1e-12 * scale {
            return None;
        }
        a.swap(c, pivot);
        let inv = 1.0 / a[c][c];
        for cell in a[c].iter_mut() {
            *cell *= inv;
        }
        let pivot_row = a[c].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != c && row[c] != 0.0 {
                let f = row[c];
                for (cell, &pv) in row.iter_mut().zip(&pivot_row) {
                    *cell -= f * pv;
                }
            }
        }
    }
    let r2: Vec<f64> = (0..n).map(|i| 1.0 - 1.0 / (diag[i] * a[i][n + i])).collect();
    r2.iter().all(|v| v.is_finite()).then_some(r2)
}

/// Gaussian elimination with partial pivoting on an augmented `p × (p+1)` matrix.
fn solve(mut a: Vec<Vec<f64>>) -> Option<Vec<f64>> {
    let p = a.len();
    for c in 0..p {
        let pivot = (c..p).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[pivot][c].abs() < 1e-10 {
            return None;
        }
        a.swap(c, pivot);
        let pivot_row = a[c].clone();
        for row in a.iter_mut().skip(c + 1) {
            let f = row[c] / pivot_row[c];
            for (cell, &pv) in row.iter_mut().zip(&pivot_row).skip(c) {
                *cell -= f * pv;
            }
        }
    }
    let mut x = vec![0.0; p];
    for r in (0..p).rev() {
        let s: f64 = (r + 1..p).map(|k| a[r][k] * x[k]).sum();
        x[r] = (a[r][p] - s) / a[r][r];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Power (W) at utilization `u` on an 11-point curve (0 %, 10 %, …, 100 %), linear between
/// points. `None` outside 0..=1 or for a malformed curve.
pub fn power_at(curve: &[f32], u: f32) -> Option<f32> {
    if curve.len() != 11 || !(0.0..=1.0).contains(&u) {
        return None;
    }
    let x = u * 10.0;
    let lo = (x.floor() as usize).min(9);
    let frac = x - lo as f32;
    Some(curve[lo] + (curve[lo + 1] - curve[lo]) * frac)
}

/// A small deterministic generator (SplitMix64) for randomized policies.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_mad_iqr_by_hand() {
        let d = [1.0, 2.0, 3.0, 4.0, 100.0];
        assert_eq!(median(&d), 3.0);
        // |x - 3| = 2,1,0,1,97 → median 1
        assert_eq!(mad(&d), 1.0);
        // n=5: q1 at round(1.5)=2 → 2.0; q3 at round(4.5)=5 → 100 (Java rounds half up)
        assert_eq!(iqr(&d), 98.0);
        assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), 2.5);
    }

    #[test]
    fn linear_fit_recovers_a_line() {
        let y: Vec<f64> = (1..=10).map(|x| 0.1 + 0.05 * x as f64).collect();
        let (a, b) = linear_fit(&y).unwrap();
        assert!((a - 0.1).abs() < 1e-9 && (b - 0.05).abs() < 1e-9);
        let (a, b) = robust_linear_fit(&y).unwrap();
        assert!((a - 0.1).abs() < 1e-9 && (b - 0.05).abs() < 1e-9);
    }

    #[test]
    fn robust_fit_ignores_an_outlier() {
        let mut y: Vec<f64> = (1..=10).map(|x| 0.2 + 0.01 * x as f64).collect();
        y[4] = 5.0;
        let (_, b_ols) = linear_fit(&y).unwrap();
        let (_, b_rob) = robust_linear_fit(&y).unwrap();
        assert!((b_rob - 0.01).abs() < (b_ols - 0.01).abs());
        assert!((b_rob - 0.01).abs() < 1e-6, "robust slope {b_rob}");
    }

    #[test]
    fn r_squared_each_agrees_with_one_regression_per_column() {
        // Four noisy, partly dependent series of 12 samples.
        let mut g = SplitMix64::new(7);
        let mut noise = || (g.next_u64() % 1000) as f64 / 1000.0;
        let a: Vec<f64> = (0..12).map(|t| t as f64 * 0.1 + noise()).collect();
        let b: Vec<f64> = (0..12).map(|t| (t as f64 * 0.7).sin() + noise()).collect();
        let c: Vec<f64> = a.iter().zip(&b).map(|(x, y)| 0.5 * x - y + 0.2 * noise()).collect();
        let d: Vec<f64> = (0..12).map(|_| noise()).collect();
        let cols = [&a[..], &b[..], &c[..], &d[..]];
        let each = r_squared_each(&cols).unwrap();
        for i in 0..4 {
            let others: Vec<&[f64]> = (0..4).filter(|&j| j != i).map(|j| cols[j]).collect();
            let one = r_squared(cols[i], &others).unwrap();
            assert!((each[i] - one).abs() < 1e-9, "column {i}: {} vs {one}", each[i]);
        }
        assert!(each[2] > 0.9 && each[3] < each[2], "{each:?}");
        // Too few observations, a constant column, dependent columns: no answer.
        assert_eq!(r_squared_each(&[&a[..4], &b[..4], &c[..4], &d[..4]]), None);
        let k = [1.0; 12];
        assert_eq!(r_squared_each(&[&a[..], &k[..]]), None);
        let twice: Vec<f64> = a.iter().map(|x| 2.0 * x).collect();
        assert_eq!(r_squared_each(&[&a[..], &twice[..], &b[..]]), None);
    }

    #[test]
    fn r_squared_of_a_perfect_fit_is_one() {
        let x1 = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let x2 = [2.0, 1.0, 4.0, 3.0, 6.0, 5.0];
        let y: Vec<f64> = (0..6).map(|i| 1.0 + 2.0 * x1[i] - x2[i]).collect();
        let r2 = r_squared(&y, &[&x1, &x2]).unwrap();
        assert!((r2 - 1.0).abs() < 1e-9);
        assert_eq!(r_squared(&y[..3], &[&x1[..3], &x2[..3]]), None);
    }

    #[test]
    fn power_interpolates() {
        let curve = [86.0, 89.4, 92.6, 96.0, 99.5, 102.0, 106.0, 108.0, 112.0, 114.0, 117.0];
        assert_eq!(power_at(&curve, 0.0), Some(86.0));
        assert_eq!(power_at(&curve, 1.0), Some(117.0));
        assert!((power_at(&curve, 0.05).unwrap() - 87.7).abs() < 1e-4);
        assert_eq!(power_at(&curve, 1.01), None);
    }
}
