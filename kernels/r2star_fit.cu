// Per-voxel mono-exponential R2* fit S = S0 * exp(-R2* * TE) with echo truncation, one thread
// per voxel, the loops over echoes and iterations inside the thread.
//
// NumPy twin (the test oracle and the CPU path): qsmliver.relaxometry.fit_r2star(...,
// method="truncation") (qsmliver/relaxometry/r2star.py, _fit_decay and _loglinear, and the
// Levenberg-Marquardt solver of qsmliver/relaxometry/_lm.py). This kernel follows it step by
// step, in double precision whatever real_t is:
//   1. scale = max_e M_e (1 where not positive); y = M / scale; sig = sigma / scale
//   2. keep the leading echoes with y_e > floor_factor * noise_floor(sig) (He T et al. MRM
//      2008;60:1082), at least min_echoes of them: n_used
//   3. target_e = sqrt(max(y_e^2 - (2N - 1) sig^2, (y_e / 4)^2)) if bias_correction, else y_e
//   4. log-linear fit of ln(target) on TE with weights target^2 over the kept echoes
//   5. Levenberg-Marquardt (Marquardt 1963) on the kept echoes with the twin's damping,
//      acceptance and stopping rules, S0 >= 0 and r_lo <= R2* <= r_hi by projection
//   6. R^2 of the fit over the kept echoes
// Differences from the twin are those of the math libraries (exp, log, sqrt to the last bit)
// and of the summation order, so results agree to about the LM tolerance, not bit for bit.
//
// Inputs: mag (n, n_echo) C-contiguous real_t magnitudes of the voxels to fit; sigma (n,)
// double noise standard deviation per real/imaginary channel; te (n_echo,) double seconds.
// Outputs (n,) double: rate (1/s, before the caller's clipping), s0 (magnitude units),
// goodness (R^2); n_used (n,) int.

#define R2S_TINY 1e-12
#define R2S_DBL_MAX 1.7976931348623157e308

__device__ __forceinline__ bool r2s_finite(const double v)
{
    return fabs(v) <= R2S_DBL_MAX;  // false for inf and NaN
}

__device__ __forceinline__ double r2s_target(const real_t* y_raw, const int e,
                                             const double scale, const double sig,
                                             const double bias_var, const int bias)
{
    const double yn = (double)y_raw[e] / scale;
    if (!bias) {
        return yn;
    }
    const double a = yn * yn - bias_var * (sig * sig);
    const double b = (0.25 * yn) * (0.25 * yn);
    return sqrt(a > b ? a : b);
}

// cost = sum_e w_e (target_e - s0 exp(-r te_e))^2 over all echoes (w_e = 1 for e < n_used)
__device__ __forceinline__ double r2s_cost(const real_t* y_raw, const double* te,
                                           const int n_echo, const int n_used,
                                           const double scale, const double sig,
                                           const double bias_var, const int bias,
                                           const double s0, const double r)
{
    double cost = 0.0;
    for (int e = 0; e < n_echo; ++e) {
        const double w = e < n_used ? 1.0 : 0.0;
        const double res = r2s_target(y_raw, e, scale, sig, bias_var, bias)
                           - s0 * exp(-r * te[e]);
        cost += w * res * res;
    }
    return cost;
}

extern "C" __global__ void r2star_truncation_fit(const real_t* __restrict__ mag,
                                                 const double* __restrict__ sigma,
                                                 const double* __restrict__ te,
                                                 const long long n, const int n_echo,
                                                 const double floor_factor,
                                                 const double floor_root2,
                                                 const double floor_gamma,
                                                 const int min_echoes,
                                                 const int bias, const double bias_var,
                                                 const double r_lo, const double r_hi,
                                                 const int max_iter, const double tol,
                                                 double* __restrict__ rate,
                                                 double* __restrict__ s0_out,
                                                 double* __restrict__ goodness,
                                                 int* __restrict__ n_used_out)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const real_t* y = mag + i * (long long)n_echo;
        // 1. normalisation
        double scale = (double)y[0];
        for (int e = 1; e < n_echo; ++e) {
            const double v = (double)y[e];
            scale = v > scale ? v : scale;
        }
        scale = scale > 0.0 ? scale : 1.0;
        const double sig = sigma[i] / scale;
        // 2. truncation: noise_floor(sig) = sig * sqrt(2) * exp(lgamma(N + 1/2) - lgamma(N))
        const double threshold = floor_factor * (sig * floor_root2 * floor_gamma);
        int run = 0;
        while (run < n_echo && (double)y[run] / scale > threshold) {
            ++run;
        }
        const int n_used = run > min_echoes ? run : min_echoes;
        // 4. weighted log-linear start
        double sw = 0.0, st = 0.0, stt = 0.0, sl = 0.0, stl = 0.0;
        for (int e = 0; e < n_used; ++e) {
            const double tv = r2s_target(y, e, scale, sig, bias_var, bias);
            const double yt = tv > R2S_TINY ? tv : R2S_TINY;
            const double logy = log(yt);
            const double w = yt * yt;
            sw += w;
            st += w * te[e];
            stt += w * te[e] * te[e];
            sl += w * logy;
            stl += w * te[e] * logy;
        }
        double det = sw * stt - st * st;
        const double ref = sw * stt > 1e-300 ? sw * stt : 1e-300;
        const bool ok = fabs(det) > 1e-30 * ref;
        det = ok ? det : 1.0;
        const double slope = ok ? (sw * stl - st * sl) / det : 0.0;
        const double intercept = (sl - slope * st) / (sw > 0.0 ? sw : 1.0);
        double p0 = exp(intercept < 700.0 ? intercept : 700.0);
        double p1 = -slope;
        p1 = p1 < r_lo ? r_lo : (p1 > r_hi ? r_hi : p1);
        p0 = p0 > 0.0 ? p0 : 0.0;
        // 5. Levenberg-Marquardt with the twin's rules (qsmliver/relaxometry/_lm.py)
        double cost = r2s_cost(y, te, n_echo, n_used, scale, sig, bias_var, bias, p0, p1);
        double lam = 1e-3;
        int quiet = 0;
        for (int it = 0; it < max_iter; ++it) {
            double a00 = 0.0, a01 = 0.0, a11 = 0.0, g0 = 0.0, g1 = 0.0;
            for (int e = 0; e < n_echo; ++e) {
                const double w = e < n_used ? 1.0 : 0.0;
                const double d = exp(-p1 * te[e]);
                const double j1 = -p0 * te[e] * d;
                const double res = r2s_target(y, e, scale, sig, bias_var, bias) - p0 * d;
                a00 += d * w * d;
                a01 += d * w * j1;
                a11 += j1 * w * j1;
                g0 += d * w * res;
                g1 += j1 * w * res;
            }
            const double dmax = a00 > a11 ? a00 : a11;
            const double b00 = a00 + lam * (a00 + 1e-12 * dmax + 1e-300);
            const double b11 = a11 + lam * (a11 + 1e-12 * dmax + 1e-300);
            double dd = b00 * b11 - a01 * a01;
            const bool solvable = fabs(dd) > 1e-300;
            dd = solvable ? dd : 1.0;
            const double x0 = solvable ? (b11 * g0 - a01 * g1) / dd : 0.0;
            const double x1 = solvable ? (b00 * g1 - a01 * g0) / dd : 0.0;
            double t0 = p0 + x0;
            double t1 = p1 + x1;
            t0 = t0 > 0.0 ? t0 : 0.0;
            t1 = t1 < r_lo ? r_lo : (t1 > r_hi ? r_hi : t1);
            const double cost_t = r2s_cost(y, te, n_echo, n_used, scale, sig, bias_var, bias,
                                           t0, t1);
            const bool better = r2s_finite(cost_t) && cost_t < cost;
            const double change = better ? (cost - cost_t) / (cost > 1e-300 ? cost : 1e-300)
                                         : 0.0;
            if (better) {
                p0 = t0;
                p1 = t1;
                cost = cost_t;
            }
            lam = better ? lam * 0.2 : lam * 10.0;
            lam = lam < 1e-9 ? 1e-9 : (lam > 1e9 ? 1e9 : lam);
            quiet = change < tol ? quiet + 1 : 0;
            if (quiet >= 3 || lam >= 1e9) {
                break;
            }
        }
        // 6. R^2 over the kept echoes
        double mean = 0.0;
        for (int e = 0; e < n_used; ++e) {
            mean += r2s_target(y, e, scale, sig, bias_var, bias);
        }
        mean /= (double)(n_used > 1 ? n_used : 1);
        double ss_tot = 0.0, ss_res = 0.0;
        for (int e = 0; e < n_used; ++e) {
            const double tv = r2s_target(y, e, scale, sig, bias_var, bias);
            const double r = tv - p0 * exp(-p1 * te[e]);
            ss_tot += (tv - mean) * (tv - mean);
            ss_res += r * r;
        }
        rate[i] = p1;
        s0_out[i] = p0 * scale;
        goodness[i] = ss_tot > 0.0 ? 1.0 - ss_res / ss_tot : 0.0;
        n_used_out[i] = n_used;
    }
}
