/* Expert imbalance carried from the layout it was measured at to another: the busiest device's
 * excess from EPLB's residual per-copy spread (averaged over its slots) and from sampling one
 * exchange's rows (clnpu_expert_imbalance_transfer). */
#include <math.h>

#include "clnpu/plan.h"

/* The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9). */
static double normal_quantile(double p)
{
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                               1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                               6.680131188771972e+01, -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                               -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                               3.754408661907416e+00};
    if (p <= 0) return -INFINITY;
    if (p >= 1) return INFINITY;
    if (p < 0.02425) {
        const double q = sqrt(-2 * log(p));
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
               ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    }
    if (p > 1 - 0.02425) {
        const double q = sqrt(-2 * log(1 - p));
        return -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
               ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    }
    const double q = p - 0.5, r = q * q;
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
           (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

double clnpu_normal_expected_max(double n)
{
    return n > 1 ? normal_quantile((n - 0.375) / (n + 0.25)) : 0;
}

double clnpu_expert_imbalance_transfer(double ratio, double g, double slots, double rows, double g_to,
                                       double slots_to, double rows_to)
{
    if (!(g_to > 1)) return 1;
    const double z = clnpu_normal_expected_max(g), z_to = clnpu_normal_expected_max(g_to);
    const double noise = rows > 0 ? z / sqrt(rows) : 0;
    /* the spread of one copy's load that EPLB leaves: what the measurement holds beyond sampling */
    const double excess = ratio / (1 + noise) - 1;
    const double spread = z > 0 && excess > 0 && slots > 0 ? excess * sqrt(slots) / z : 0;
    const double sys = slots_to > 0 ? z_to * spread / sqrt(slots_to) : 0;
    const double samp = rows_to > 0 ? z_to / sqrt(rows_to) : 0;
    return (1 + sys) * (1 + samp);
}
