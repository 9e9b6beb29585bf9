// Element-wise conversions between complex echoes and magnitude/phase.
//
// NumPy twins (the test oracle and the CPU path): qsmliver/complexops.py
//   complex_to_polar  <->  numpy.abs / numpy.angle
//   polar_to_complex  <->  magnitude * exp(1j * phase)
//
// real_t / complex_t are defined by the loader (qsmliver.backend.kernel_source) as
// float/float2 or double/double2. Arrays must be C-contiguous; n is the element count.

extern "C" __global__ void complex_to_polar(const complex_t* __restrict__ z,
                                            real_t* __restrict__ magnitude,
                                            real_t* __restrict__ phase,
                                            const long long n)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const complex_t v = z[i];
        magnitude[i] = hypot(v.x, v.y);
        phase[i] = atan2(v.y, v.x);
    }
}

extern "C" __global__ void polar_to_complex(const real_t* __restrict__ magnitude,
                                            const real_t* __restrict__ phase,
                                            complex_t* __restrict__ z,
                                            const long long n)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const real_t m = magnitude[i];
        const real_t p = phase[i];
        complex_t v;
        v.x = m * cos(p);
        v.y = m * sin(p);
        z[i] = v;
    }
}
