// Fat-water separation per voxel: the VARPRO field-map cost over a (psi, R2*) candidate grid,
// and the T2*-IDEAL Gauss-Newton refinement of (psi, R2*). One thread per voxel; the loops
// over echoes, candidates, iterations and step halvings run inside the thread.
//
// Signal model (DESIGN section 5): S_e = (W + F c_e) d_e,  d_e = exp(z TE_e),
// z = -R2* + i 2 pi psi, c_e = sum_p a_p exp(i 2 pi f_p TE_e) (multi-peak fat, "basis").
// Hernando D et al., MRM 2008;59:571-580 (VARPRO); Yu H et al., MRM 2008;60:1122-1134
// (multi-peak T2*-IDEAL).
//
// NumPy twins (the test oracle and the CPU path):
//   varpro_weights + varpro_phasors + varpro_cost
//       <->  qsmliver.fatwater.varpro.varpro_cost (qsmliver/fatwater/varpro.py)
//   ideal_refine
//       <->  qsmliver.fatwater.ideal.ideal_refine (qsmliver/fatwater/ideal.py)
//
// varpro_cost follows the twin's precision model: the tables (orthonormalised weights per R2*
// candidate, field phasors) are computed in double and rounded to real_t, the inner products
// and projected energies are accumulated in real_t, the signal energy ||S||^2 in double, and
// cost = max(||S||^2 - projected energy, 0) is formed in double and rounded to real_t.
// ideal_refine works in double whatever real_t is (the twin casts the signal to complex128).
// Differences from the twins are those of the summation order (NumPy's pairwise sums and BLAS
// products against sequential sums here), of FMA contraction on the device and of the math
// library (exp, sin, cos to the last bit); every other operation is the twin's, in its order,
// including its complex-by-real division (multiplication by the reciprocal).
//
// Layouts (all C-contiguous; complex values as interleaved (re, im) pairs):
//   signal (n, n_echo, 2) real_t; te (n_echo) double, seconds; basis (n_echo, 2) double;
//   r2s (n_r2) double, 1/s; psi (n_psi) double, Hz;
//   weights (n_r2, 2, n_echo, 2) real_t; phasors (n_psi, n_echo, 2) real_t;
//   cost (n, n_psi) real_t and index (n, n_psi) short when reduce, else cost (n, n_psi, n_r2).
// real_t is defined by the loader (qsmliver.backend.kernel_source): float or double.

#define FW_MAX_ECHOES 32
#define FW_TINY 1e-300
#define FW_TWO_PI 6.283185307179586  // 2 * numpy.pi, the same double
#define FW_HALVINGS 6                // qsmliver.fatwater.ideal._HALVINGS

// numpy.maximum / numpy.minimum: NaN propagates from either argument
__device__ __forceinline__ double fw_max(const double a, const double b)
{
    return a != a ? a : (b != b ? b : (a >= b ? a : b));
}

__device__ __forceinline__ double fw_min(const double a, const double b)
{
    return a != a ? a : (b != b ? b : (a <= b ? a : b));
}

// numpy.clip(x, lo, hi) = minimum(maximum(x, lo), hi)
__device__ __forceinline__ double fw_clip(const double x, const double lo, const double hi)
{
    return fw_min(fw_max(x, lo), hi);
}

// ---- VARPRO cost ------------------------------------------------------------------------------
// Orthonormalised columns of A = diag(d) [1, c] per R2* candidate (twin: the loop over r2s in
// varpro_cost): weights[m, 0] = d / sqrt(G11), weights[m, 1] = d (conj(c) - conj(G12) / G11)
// / sqrt(G22 - |G12|^2 / G11), with d_e = exp(-R2*_m TE_e) and G the Gram matrix of d^2.
extern "C" __global__ void varpro_weights(const double* __restrict__ te,
                                          const double* __restrict__ basis,
                                          const double* __restrict__ r2s,
                                          const long long n_r2, const int n_echo,
                                          real_t* __restrict__ weights)
{
    for (long long m = (long long)blockIdx.x * blockDim.x + threadIdx.x; m < n_r2;
         m += (long long)blockDim.x * gridDim.x) {
        const double r = r2s[m];
        double g11 = 0.0, g12r = 0.0, g12i = 0.0, g22 = 0.0;
        for (int e = 0; e < n_echo; ++e) {
            const double decay = exp(-r * te[e]);
            const double w = decay * decay;
            const double babs = hypot(basis[2 * e], basis[2 * e + 1]);
            g11 += w;
            g12r += w * basis[2 * e];
            g12i += w * basis[2 * e + 1];
            g22 += w * (babs * babs);
        }
        g11 = g11 > FW_TINY ? g11 : FW_TINY;
        const double g12abs = hypot(g12r, g12i);
        double norm2 = g22 - g12abs * g12abs / g11;
        norm2 = norm2 > FW_TINY ? norm2 : FW_TINY;
        const double root11 = sqrt(g11);
        const double inv_root2 = 1.0 / sqrt(norm2);  // complex / real in NumPy: reciprocal
        const double cr = g12r / g11;                // conj(G12) / G11
        const double ci = -g12i / g11;
        real_t* w0 = weights + m * 4LL * n_echo;
        real_t* w1 = w0 + 2LL * n_echo;
        for (int e = 0; e < n_echo; ++e) {
            const double decay = exp(-r * te[e]);
            w0[2 * e] = (real_t)(decay / root11);
            w0[2 * e + 1] = (real_t)0;
            const double xr = basis[2 * e] - cr;
            const double xi = -basis[2 * e + 1] - ci;
            w1[2 * e] = (real_t)((decay * xr) * inv_root2);
            w1[2 * e + 1] = (real_t)((decay * xi) * inv_root2);
        }
    }
}

// Field phasors exp(-i 2 pi psi_k TE_e), one entry per thread (twin: phasors_h, transposed).
extern "C" __global__ void varpro_phasors(const double* __restrict__ te,
                                          const double* __restrict__ psi,
                                          const long long n_psi, const int n_echo,
                                          real_t* __restrict__ phasors)
{
    const long long total = n_psi * n_echo;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < total;
         j += (long long)blockDim.x * gridDim.x) {
        const long long k = j / n_echo;
        const int e = (int)(j - k * n_echo);
        const double phase = -(FW_TWO_PI * (te[e] * psi[k]));
        phasors[2 * j] = (real_t)cos(phase);
        phasors[2 * j + 1] = (real_t)sin(phase);
    }
}

// cost of every voxel for every field candidate (reduce: minimum over R2*, and its index)
extern "C" __global__ void varpro_cost(const real_t* __restrict__ signal,
                                       const real_t* __restrict__ weights,
                                       const real_t* __restrict__ phasors,
                                       const long long n, const int n_echo, const int n_psi,
                                       const int n_r2, const int reduce,
                                       real_t* __restrict__ cost,
                                       short* __restrict__ index)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const real_t* s = signal + i * 2LL * n_echo;
        double energy = 0.0;  // twin: sum(abs(S.astype(complex128)) ** 2)
        for (int e = 0; e < n_echo; ++e) {
            const double a = hypot((double)s[2 * e], (double)s[2 * e + 1]);
            energy += a * a;
        }
        for (int k = 0; k < n_psi; ++k) {
            // t_e = S_e exp(-i 2 pi psi_k TE_e), shared by all R2* candidates
            real_t tr[FW_MAX_ECHOES], ti[FW_MAX_ECHOES];
            const real_t* p = phasors + (long long)k * 2 * n_echo;
            for (int e = 0; e < n_echo; ++e) {
                const real_t sr = s[2 * e], si = s[2 * e + 1];
                tr[e] = sr * p[2 * e] - si * p[2 * e + 1];
                ti[e] = sr * p[2 * e + 1] + si * p[2 * e];
            }
            real_t top = (real_t)0;
            int best = 0;
            for (int m = 0; m < n_r2; ++m) {
                const real_t* w0 = weights + (long long)m * 4 * n_echo;
                const real_t* w1 = w0 + 2 * n_echo;
                real_t ar = 0, ai = 0, br = 0, bi = 0;
                for (int e = 0; e < n_echo; ++e) {
                    ar += w0[2 * e] * tr[e] - w0[2 * e + 1] * ti[e];
                    ai += w0[2 * e] * ti[e] + w0[2 * e + 1] * tr[e];
                    br += w1[2 * e] * tr[e] - w1[2 * e + 1] * ti[e];
                    bi += w1[2 * e] * ti[e] + w1[2 * e + 1] * tr[e];
                }
                const real_t proj = (ar * ar + ai * ai) + (br * br + bi * bi);
                if (reduce) {
                    // numpy max / argmax over R2*: the first maximum, and the first NaN
                    if (m == 0 || (top == top && (proj > top || proj != proj))) {
                        top = proj;
                        best = m;
                    }
                } else {
                    const double c = energy - (double)proj;
                    cost[(i * n_psi + k) * n_r2 + m] = (real_t)(c > 0.0 || c != c ? c : 0.0);
                }
            }
            if (reduce) {
                const double c = energy - (double)top;
                cost[i * n_psi + k] = (real_t)(c > 0.0 || c != c ? c : 0.0);
                index[i * n_psi + k] = (short)best;
            }
        }
    }
}

// ---- T2*-IDEAL refinement ---------------------------------------------------------------------
// The Gram matrix of the water and fat columns diag(d) [1, c] (twin: _project in varpro.py).
struct fw_gram {
    double g11, g12r, g12i, g22, inv_det;
};

// d_e = exp((-R2* + i 2 pi psi) TE_e) (twin: xp.exp((-r + 1j * two_pi * psi) * te_x))
__device__ __forceinline__ void fw_decay(const double* te, const int n_echo, const double psi,
                                         const double r, double* d)
{
    const double zr = -r;
    const double zi = FW_TWO_PI * psi;
    for (int e = 0; e < n_echo; ++e) {
        const double mag = exp(zr * te[e]);
        const double phase = zi * te[e];
        d[2 * e] = mag * cos(phase);
        d[2 * e + 1] = mag * sin(phase);
    }
}

__device__ __forceinline__ fw_gram fw_gram_of(const double* d, const double* basis,
                                              const int n_echo)
{
    fw_gram g = {0.0, 0.0, 0.0, 0.0, 0.0};
    for (int e = 0; e < n_echo; ++e) {
        const double w2 = d[2 * e] * d[2 * e] + d[2 * e + 1] * d[2 * e + 1];
        const double br = basis[2 * e], bi = basis[2 * e + 1];
        g.g11 += w2;
        g.g12r += w2 * br;
        g.g12i += w2 * bi;
        g.g22 += w2 * (br * br + bi * bi);
    }
    double det = g.g11 * g.g22 - (g.g12r * g.g12r + g.g12i * g.g12i);
    det = det > FW_TINY ? det : FW_TINY;
    g.inv_det = 1.0 / det;
    return g;
}

// Least-squares water and fat amplitudes of the vector v (interleaved, n_echo complex).
__device__ __forceinline__ void fw_amplitudes(const fw_gram g, const double* d,
                                              const double* basis, const double* v,
                                              const int n_echo, double* water, double* fat)
{
    double y1r = 0.0, y1i = 0.0, y2r = 0.0, y2i = 0.0;
    for (int e = 0; e < n_echo; ++e) {
        const double dr = d[2 * e], di = d[2 * e + 1];
        const double vr = v[2 * e], vi = v[2 * e + 1];
        const double xr = dr * vr + di * vi;  // conj(d) v
        const double xi = dr * vi - di * vr;
        const double br = basis[2 * e], bi = basis[2 * e + 1];
        y1r += xr;
        y1i += xi;
        y2r += xr * br + xi * bi;  // conj(d) v conj(c)
        y2i += xi * br - xr * bi;
    }
    // W = (G22 y1 - G12 y2) / det, F = (G11 y2 - conj(G12) y1) / det
    const double wr = g.g22 * y1r - (g.g12r * y2r - g.g12i * y2i);
    const double wi = g.g22 * y1i - (g.g12r * y2i + g.g12i * y2r);
    const double fr = g.g11 * y2r - (g.g12r * y1r + g.g12i * y1i);
    const double fi = g.g11 * y2i - (g.g12r * y1i - g.g12i * y1r);
    water[0] = wr * g.inv_det;
    water[1] = wi * g.inv_det;
    fat[0] = fr * g.inv_det;
    fat[1] = fi * g.inv_det;
}

// model_e = d_e (W + F c_e)
__device__ __forceinline__ void fw_model(const double* d, const double* basis,
                                         const double* water, const double* fat, const int e,
                                         double* mr, double* mi)
{
    const double br = basis[2 * e], bi = basis[2 * e + 1];
    const double qr = water[0] + (fat[0] * br - fat[1] * bi);
    const double qi = water[1] + (fat[0] * bi + fat[1] * br);
    const double dr = d[2 * e], di = d[2 * e + 1];
    *mr = dr * qr - di * qi;
    *mi = dr * qi + di * qr;
}

// d for (psi, r), the amplitudes of the signal and the squared residual norm ||S - model||^2
__device__ __forceinline__ double fw_fit(const double* s, const double* te, const double* basis,
                                         const int n_echo, const double psi, const double r,
                                         double* d, double* water, double* fat)
{
    fw_decay(te, n_echo, psi, r, d);
    const fw_gram g = fw_gram_of(d, basis, n_echo);
    fw_amplitudes(g, d, basis, s, n_echo, water, fat);
    double res = 0.0;
    for (int e = 0; e < n_echo; ++e) {
        double mr, mi;
        fw_model(d, basis, water, fat, e, &mr, &mi);
        const double er = s[2 * e] - mr, ei = s[2 * e + 1] - mi;
        res += er * er + ei * ei;
    }
    return res;
}

extern "C" __global__ void ideal_refine(const real_t* __restrict__ signal,
                                        const double* __restrict__ te,
                                        const double* __restrict__ basis,
                                        const double* __restrict__ psi0,
                                        const double* __restrict__ r0,
                                        const long long n, const int n_echo,
                                        const int max_iter, const double tol_hz,
                                        const double r_max, const int limit_shift,
                                        const double max_shift_hz,
                                        double* __restrict__ psi_out,
                                        double* __restrict__ r_out,
                                        double* __restrict__ water_out,
                                        double* __restrict__ fat_out,
                                        double* __restrict__ residual_out,
                                        unsigned char* __restrict__ converged_out,
                                        int* __restrict__ iterations_out)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        double s[2 * FW_MAX_ECHOES], d[2 * FW_MAX_ECHOES], jac[2 * FW_MAX_ECHOES];
        for (int e = 0; e < 2 * n_echo; ++e) {
            s[e] = (double)signal[i * 2LL * n_echo + e];
        }
        const double start = psi0[i];
        const double lo = start - max_shift_hz;  // twin: clip(psi, psi0 - shift, lo + 2 shift)
        const double hi = lo + 2.0 * max_shift_hz;
        double psi = start;
        double r = fw_clip(r0[i], 0.0, r_max);
        double water[2], fat[2];
        double residual = fw_fit(s, te, basis, n_echo, psi, r, d, water, fat);
        int converged = 0;
        int iterations = 0;
        for (int it = 0; it < max_iter; ++it) {
            ++iterations;
            fw_decay(te, n_echo, psi, r, d);
            const fw_gram g = fw_gram_of(d, basis, n_echo);
            fw_amplitudes(g, d, basis, s, n_echo, water, fat);
            // derivative column TE * model, then its part outside span(d, d c)
            for (int e = 0; e < n_echo; ++e) {
                double mr, mi;
                fw_model(d, basis, water, fat, e, &mr, &mi);
                jac[2 * e] = te[e] * mr;
                jac[2 * e + 1] = te[e] * mi;
            }
            double gw[2], gf[2];
            fw_amplitudes(g, d, basis, jac, n_echo, gw, gf);
            double denom = 0.0, numr = 0.0, numi = 0.0;
            for (int e = 0; e < n_echo; ++e) {
                double mr, mi, pr, pi;
                fw_model(d, basis, water, fat, e, &mr, &mi);
                fw_model(d, basis, gw, gf, e, &pr, &pi);
                const double jr = jac[2 * e] - pr, ji = jac[2 * e + 1] - pi;
                const double rr = s[2 * e] - mr, ri = s[2 * e + 1] - mi;
                denom += jr * jr + ji * ji;
                numr += jr * rr + ji * ri;  // conj(J) rho
                numi += jr * ri - ji * rr;
            }
            const bool ok = denom > FW_TINY * fw_max(residual, FW_TINY);
            const double inv = 1.0 / (ok ? denom : 1.0);
            const double dzr = ok ? numr * inv : 0.0;
            const double dzi = ok ? numi * inv : 0.0;
            // z = -R2* + i 2 pi psi: Re dz = -dR2*, Im dz = 2 pi dpsi
            const double step_psi = dzi / FW_TWO_PI;
            const double step_r = -dzr;
            // damped step: halve it until the residual does not increase
            double new_psi = psi, new_r = r, new_res = residual;
            bool accepted = false;
            double scale = 1.0;
            for (int h = 0; h < FW_HALVINGS; ++h) {
                double trial_psi = psi + scale * step_psi;
                if (limit_shift) {
                    trial_psi = fw_clip(trial_psi, lo, hi);
                }
                const double trial_r = fw_clip(r + scale * step_r, 0.0, r_max);
                double tw[2], tf[2];
                const double res_t = fw_fit(s, te, basis, n_echo, trial_psi, trial_r, d, tw, tf);
                if (res_t <= residual) {
                    new_psi = trial_psi;
                    new_r = trial_r;
                    new_res = res_t;
                    accepted = true;
                    break;
                }
                scale *= 0.5;
            }
            const double moved = fw_max(fabs(new_psi - psi), fabs(new_r - r) / FW_TWO_PI);
            psi = new_psi;
            r = new_r;
            residual = new_res;
            if (moved < tol_hz || !accepted) {
                converged = 1;
                break;
            }
        }
        residual = fw_fit(s, te, basis, n_echo, psi, r, d, water, fat);
        psi_out[i] = psi;
        r_out[i] = r;
        water_out[2 * i] = water[0];
        water_out[2 * i + 1] = water[1];
        fat_out[2 * i] = fat[0];
        fat_out[2 * i + 1] = fat[1];
        residual_out[i] = residual;
        converged_out[i] = (unsigned char)converged;
        iterations_out[i] = iterations;
    }
}
