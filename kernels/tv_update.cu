// Fused TV-ADMM updates of the gradient split z1 = grad(chi) (FANSI; Bilgic et al. MRM 2014;
// Milovic et al. MRM 2018), one thread per voxel of a C-contiguous (nx, ny, nz) volume.
//
// NumPy twins (the test oracle and the CPU path): qsmliver/optim/fused.py
//   tv_shrink_update           <->  g = gradient(chi, h, boundary)
//                                   z1 = soft_threshold(g + s1, t)
//                                   s1_new = s1 + (g - z1);  u = z1 - s1_new
//   tv_grad_adjoint            <->  -divergence(u, h, boundary)
//   tv_shrink_update_adjoint   <->  both of the above in one pass (u is never stored)
//
// Discretisation (qsmliver/optim/operators.py): forward differences divided by the voxel size
// h (mm); "periodic" wraps around, "neumann" (neumann = 1) sets the difference across the last
// face to zero; the divergence is the backward difference of the components whose last face
// is zeroed for "neumann". Every value is computed with the same IEEE operations in the same
// order as the twin (divisions, not multiplications by 1/h; sign(v) * max(|v| - t, 0); no
// expression that the compiler may contract into an FMA with a different rounding), so the
// results equal the twin's bit for bit up to the sign of zeros.
//
// Array layout: chi, out (nx, ny, nz); s1, s1_new, u (3, nx, ny, nz), all C-contiguous.
// real_t is defined by the loader (qsmliver.backend.kernel_source): float or double.

__device__ __forceinline__ real_t tv_soft(const real_t v, const real_t t)
{
    // numpy: sign(v) * maximum(|v| - t, 0); maximum propagates NaN, sign(0) = 0
    real_t m = fabs(v) - t;
    m = (m > (real_t)0 || m != m) ? m : (real_t)0;
    const real_t sg = v > (real_t)0 ? (real_t)1 : (v < (real_t)0 ? (real_t)-1
                                                  : (v == (real_t)0 ? (real_t)0 : v));
    return sg * m;
}

// forward difference along one axis at linear index i whose coordinate on that axis is c
__device__ __forceinline__ real_t tv_forward(const real_t* chi, const long long i,
                                             const long long c, const long long n,
                                             const long long stride, const real_t h,
                                             const int neumann)
{
    if (c == n - 1) {
        if (neumann) {
            return (real_t)0;
        }
        return (chi[i - (n - 1) * stride] - chi[i]) / h;
    }
    return (chi[i + stride] - chi[i]) / h;
}

// one component of the shrinkage at one voxel: writes nothing, returns u and s1_new
__device__ __forceinline__ void tv_shrink(const real_t g, const real_t s, const real_t t,
                                          real_t* s_new, real_t* u)
{
    const real_t z = tv_soft(g + s, t);
    const real_t sn = s + (g - z);
    *s_new = sn;
    *u = z - sn;
}

extern "C" __global__ void tv_shrink_update(const real_t* chi,
                                            const real_t* s1,
                                            real_t* s1_new,  // may alias s1 (in place)
                                            real_t* u,
                                            const long long nx, const long long ny,
                                            const long long nz,
                                            const real_t h0, const real_t h1, const real_t h2,
                                            const real_t t, const int neumann)
{
    const long long n = nx * ny * nz;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const long long z = i % nz;
        const long long y = (i / nz) % ny;
        const long long x = i / (nz * ny);
        const real_t g0 = tv_forward(chi, i, x, nx, ny * nz, h0, neumann);
        const real_t g1 = tv_forward(chi, i, y, ny, nz, h1, neumann);
        const real_t g2 = tv_forward(chi, i, z, nz, 1, h2, neumann);
        real_t sn, uu;
        tv_shrink(g0, s1[i], t, &sn, &uu);
        s1_new[i] = sn;
        u[i] = uu;
        tv_shrink(g1, s1[n + i], t, &sn, &uu);
        s1_new[n + i] = sn;
        u[n + i] = uu;
        tv_shrink(g2, s1[2 * n + i], t, &sn, &uu);
        s1_new[2 * n + i] = sn;
        u[2 * n + i] = uu;
    }
}

// backward difference of one component (zeroed last face for "neumann"), divided by h
__device__ __forceinline__ real_t tv_backward(const real_t* c_arr, const long long i,
                                              const long long c, const long long n,
                                              const long long stride, const real_t h,
                                              const int neumann)
{
    const real_t cur = (neumann && c == n - 1) ? (real_t)0 : c_arr[i];
    real_t prev;
    if (c == 0) {
        prev = neumann ? (real_t)0 : c_arr[i + (n - 1) * stride];
    } else {
        prev = c_arr[i - stride];
    }
    return (cur - prev) / h;
}

extern "C" __global__ void tv_grad_adjoint(const real_t* __restrict__ u,
                                           real_t* __restrict__ out,
                                           const long long nx, const long long ny,
                                           const long long nz,
                                           const real_t h0, const real_t h1, const real_t h2,
                                           const int neumann)
{
    const long long n = nx * ny * nz;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const long long z = i % nz;
        const long long y = (i / nz) % ny;
        const long long x = i / (nz * ny);
        // numpy: out = 0; out += d0 / h0; out += d1 / h1; out += d2 / h2; then negated
        real_t acc = (real_t)0 + tv_backward(u, i, x, nx, ny * nz, h0, neumann);
        acc = acc + tv_backward(u + n, i, y, ny, nz, h1, neumann);
        acc = acc + tv_backward(u + 2 * n, i, z, nz, 1, h2, neumann);
        out[i] = -acc;
    }
}

// u component `axis` at voxel j (coordinate c along the axis): recomputed from chi and the
// old s1, exactly as tv_shrink_update computes it at j
__device__ __forceinline__ real_t tv_u_at(const real_t* chi, const real_t* s1_axis,
                                          const long long j, const long long c,
                                          const long long n, const long long stride,
                                          const real_t h, const real_t t, const int neumann)
{
    real_t sn, uu;
    tv_shrink(tv_forward(chi, j, c, n, stride, h, neumann), s1_axis[j], t, &sn, &uu);
    return uu;
}

// one axis of the fused update at voxel i: writes s1_new there, returns (u_i - u_prev) / h
__device__ __forceinline__ real_t tv_fused_axis(const real_t* chi, const real_t* s1_axis,
                                                real_t* s1_new_axis, const long long i,
                                                const long long c, const long long n,
                                                const long long stride, const real_t h,
                                                const real_t t, const int neumann)
{
    real_t sn, u_here;
    tv_shrink(tv_forward(chi, i, c, n, stride, h, neumann), s1_axis[i], t, &sn, &u_here);
    s1_new_axis[i] = sn;
    const real_t cur = (neumann && c == n - 1) ? (real_t)0 : u_here;
    real_t prev;
    if (c == 0) {
        prev = neumann ? (real_t)0
                       : tv_u_at(chi, s1_axis, i + (n - 1) * stride, n - 1, n, stride, h, t,
                                 neumann);
    } else {
        prev = tv_u_at(chi, s1_axis, i - stride, c - 1, n, stride, h, t, neumann);
    }
    return (cur - prev) / h;
}

// Shrinkage, dual update and grad_adjoint(z1 - s1_new) in one pass. The neighbour values of u
// that the backward difference needs are recomputed from chi and the *old* s1 with the same
// operations, so s1_new must not overlap s1 (the loader checks) and no thread reads what
// another writes.
extern "C" __global__ void tv_shrink_update_adjoint(const real_t* __restrict__ chi,
                                                    const real_t* __restrict__ s1,
                                                    real_t* __restrict__ s1_new,
                                                    real_t* __restrict__ out,
                                                    const long long nx, const long long ny,
                                                    const long long nz,
                                                    const real_t h0, const real_t h1,
                                                    const real_t h2, const real_t t,
                                                    const int neumann)
{
    const long long n = nx * ny * nz;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const long long z = i % nz;
        const long long y = (i / nz) % ny;
        const long long x = i / (nz * ny);
        real_t acc = (real_t)0 + tv_fused_axis(chi, s1, s1_new, i, x, nx, ny * nz, h0, t,
                                               neumann);
        acc = acc + tv_fused_axis(chi, s1 + n, s1_new + n, i, y, ny, nz, h1, t, neumann);
        acc = acc + tv_fused_axis(chi, s1 + 2 * n, s1_new + 2 * n, i, z, nz, 1, h2, t, neumann);
        out[i] = -acc;
    }
}
