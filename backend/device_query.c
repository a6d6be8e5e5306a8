/* Enumerate OpenCL platforms and devices and query their capabilities into one struct. */
#include <stdlib.h>
#include <string.h>

#include "clnpu/device.h"
#include "device_internal.h"
#include "../common/error.h"

const char *clnpu_device_type_name(clnpu_device_type type)
{
    switch (type) {
    case CLNPU_DEVICE_TYPE_CPU: return "cpu";
    case CLNPU_DEVICE_TYPE_GPU: return "gpu";
    case CLNPU_DEVICE_TYPE_ACCELERATOR: return "accelerator";
    default: return "other";
    }
}

static void get_str(cl_device_id d, cl_device_info what, char *out, size_t cap)
{
    out[0] = '\0';
    size_t n = 0;
    if (clGetDeviceInfo(d, what, cap, out, &n) != CL_SUCCESS) out[0] = '\0';
    out[cap - 1] = '\0';
    /* Trim trailing spaces some drivers pad names with. */
    size_t len = strlen(out);
    while (len && (out[len - 1] == ' ' || out[len - 1] == '\n')) out[--len] = '\0';
}

static cl_uint get_uint(cl_device_id d, cl_device_info what)
{
    cl_uint v = 0;
    if (clGetDeviceInfo(d, what, sizeof v, &v, NULL) != CL_SUCCESS) v = 0;
    return v;
}

static cl_ulong get_ulong(cl_device_id d, cl_device_info what)
{
    cl_ulong v = 0;
    if (clGetDeviceInfo(d, what, sizeof v, &v, NULL) != CL_SUCCESS) v = 0;
    return v;
}

bool clnpu_device_info_has_extension(const clnpu_device_info *info, const char *ext)
{
    size_t n = strlen(ext);
    for (const char *p = info->extensions; (p = strstr(p, ext)) != NULL; p += n) {
        bool start = p == info->extensions || p[-1] == ' ';
        bool end = p[n] == '\0' || p[n] == ' ';
        if (start && end) return true;
    }
    return false;
}

void clnpu_device_query(cl_platform_id platform, cl_device_id d, clnpu_device_info *info)
{
    memset(info, 0, sizeof *info);
    clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof info->platform_name, info->platform_name, NULL);
    clGetPlatformInfo(platform, CL_PLATFORM_VERSION, sizeof info->platform_version,
                      info->platform_version, NULL);
    info->platform_name[sizeof info->platform_name - 1] = '\0';
    info->platform_version[sizeof info->platform_version - 1] = '\0';
    get_str(d, CL_DEVICE_VENDOR, info->vendor, sizeof info->vendor);
    get_str(d, CL_DEVICE_NAME, info->name, sizeof info->name);
    get_str(d, CL_DRIVER_VERSION, info->driver_version, sizeof info->driver_version);
    get_str(d, CL_DEVICE_VERSION, info->device_version, sizeof info->device_version);
    get_str(d, CL_DEVICE_OPENCL_C_VERSION, info->opencl_c_version, sizeof info->opencl_c_version);
    get_str(d, CL_DEVICE_EXTENSIONS, info->extensions, sizeof info->extensions);

    cl_device_type t = 0;
    clGetDeviceInfo(d, CL_DEVICE_TYPE, sizeof t, &t, NULL);
    info->type = (t & CL_DEVICE_TYPE_GPU)           ? CLNPU_DEVICE_TYPE_GPU
                 : (t & CL_DEVICE_TYPE_ACCELERATOR) ? CLNPU_DEVICE_TYPE_ACCELERATOR
                 : (t & CL_DEVICE_TYPE_CPU)         ? CLNPU_DEVICE_TYPE_CPU
                                                    : CLNPU_DEVICE_TYPE_OTHER;
    info->compute_units = get_uint(d, CL_DEVICE_MAX_COMPUTE_UNITS);
    info->clock_mhz = get_uint(d, CL_DEVICE_MAX_CLOCK_FREQUENCY);
    info->global_mem_bytes = get_ulong(d, CL_DEVICE_GLOBAL_MEM_SIZE);
    info->local_mem_bytes = get_ulong(d, CL_DEVICE_LOCAL_MEM_SIZE);
    info->global_cache_bytes = get_ulong(d, CL_DEVICE_GLOBAL_MEM_CACHE_SIZE);
    cl_device_local_mem_type lt = 0;
    clGetDeviceInfo(d, CL_DEVICE_LOCAL_MEM_TYPE, sizeof lt, &lt, NULL);
    info->local_mem_is_global = lt == CL_GLOBAL;
    info->max_alloc_bytes = get_ulong(d, CL_DEVICE_MAX_MEM_ALLOC_SIZE);
    clGetDeviceInfo(d, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof info->max_work_group_size,
                    &info->max_work_group_size, NULL);
    clGetDeviceInfo(d, CL_DEVICE_MAX_WORK_ITEM_SIZES, sizeof info->max_work_item_sizes,
                    info->max_work_item_sizes, NULL);
    info->pref_vector_width_float = get_uint(d, CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT);
    info->pref_vector_width_half = get_uint(d, CL_DEVICE_PREFERRED_VECTOR_WIDTH_HALF);
    info->pref_vector_width_char = get_uint(d, CL_DEVICE_PREFERRED_VECTOR_WIDTH_CHAR);
    info->native_vector_width_float = get_uint(d, CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT);
    info->address_bits = get_uint(d, CL_DEVICE_ADDRESS_BITS);
    info->fp16 = clnpu_device_info_has_extension(info, "cl_khr_fp16");
    info->fp64 = clnpu_device_info_has_extension(info, "cl_khr_fp64") ||
                 get_ulong(d, CL_DEVICE_DOUBLE_FP_CONFIG) != 0;
    info->int_dot_product = clnpu_device_info_has_extension(info, "cl_khr_integer_dot_product");

    /* Sub-group sizes: core in OpenCL 3.0 (optional), cl_intel_required_subgroup_size lists them;
     * NVIDIA exposes a warp size of 32 through cl_nv_device_attribute_query. */
    info->max_num_subgroups = get_uint(d, 0x105C /* CL_DEVICE_MAX_NUM_SUB_GROUPS */);
    info->subgroups = clnpu_device_info_has_extension(info, "cl_khr_subgroups") ||
                      clnpu_device_info_has_extension(info, "cl_intel_subgroups") || info->max_num_subgroups > 0;
    size_t sizes[8] = {0}, nbytes = 0;
    if (clGetDeviceInfo(d, 0x4108 /* CL_DEVICE_SUB_GROUP_SIZES_INTEL */, sizeof sizes, sizes,
                        &nbytes) == CL_SUCCESS && nbytes > 0) {
        info->subgroup_size_count = (unsigned)(nbytes / sizeof(size_t));
        if (info->subgroup_size_count > 8) info->subgroup_size_count = 8;
        memcpy(info->subgroup_sizes, sizes, info->subgroup_size_count * sizeof(size_t));
    } else if (clnpu_device_info_has_extension(info, "cl_nv_device_attribute_query")) {
        cl_uint warp = get_uint(d, 0x4003 /* CL_DEVICE_WARP_SIZE_NV */);
        if (warp) {
            info->subgroup_sizes[0] = warp;
            info->subgroup_size_count = 1;
        }
    }
}

clnpu_status clnpu_device_enumerate(clnpu_cl_device_ref **out_refs, clnpu_device_info **out_infos,
                                    size_t *out_count)
{
    *out_infos = NULL;
    *out_count = 0;
    if (out_refs) *out_refs = NULL;
    cl_uint nplat = 0;
    cl_int err = clGetPlatformIDs(0, NULL, &nplat);
    if (err == -1001 /* CL_PLATFORM_NOT_FOUND_KHR */ || (err == CL_SUCCESS && nplat == 0))
        return clnpu_fail(CLNPU_ERR_NOT_FOUND,
                          "no OpenCL platform found (is an ICD such as pocl-opencl-icd installed?)");
    if (err != CL_SUCCESS) return clnpu_fail_cl(err, "clGetPlatformIDs", "listing platforms");
    cl_platform_id *plats = calloc(nplat, sizeof *plats);
    if (!plats) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory listing platforms");
    clGetPlatformIDs(nplat, plats, NULL);

    size_t total = 0, cap = 0;
    clnpu_device_info *infos = NULL;
    clnpu_cl_device_ref *refs = NULL;
    clnpu_status st = CLNPU_OK;
    for (cl_uint p = 0; p < nplat && st == CLNPU_OK; p++) {
        cl_uint ndev = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &ndev) != CL_SUCCESS || !ndev)
            continue; /* a platform with no usable device is not an error */
        cl_device_id *devs = calloc(ndev, sizeof *devs);
        if (!devs) { st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory"); break; }
        clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, ndev, devs, NULL);
        for (cl_uint i = 0; i < ndev; i++) {
            if (total == cap) {
                cap = cap ? cap * 2 : 4;
                clnpu_device_info *ni = realloc(infos, cap * sizeof *ni);
                clnpu_cl_device_ref *nr = realloc(refs, cap * sizeof *nr);
                if (ni) infos = ni;
                if (nr) refs = nr;
                if (!ni || !nr) { st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory"); break; }
            }
            clnpu_device_query(plats[p], devs[i], &infos[total]);
            infos[total].index = total;
            infos[total].platform_index = p;
            refs[total].platform = plats[p];
            refs[total].device = devs[i];
            total++;
        }
        free(devs);
    }
    free(plats);
    if (st == CLNPU_OK && total == 0)
        st = clnpu_fail(CLNPU_ERR_NOT_FOUND, "OpenCL platforms found, but no devices on any of them");
    if (st != CLNPU_OK) {
        free(infos);
        free(refs);
        return st;
    }
    *out_infos = infos;
    *out_count = total;
    if (out_refs) *out_refs = refs;
    else free(refs);
    return CLNPU_OK;
}

clnpu_status clnpu_device_list(clnpu_device_info **out_infos, size_t *out_count)
{
    if (!out_infos || !out_count)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_device_list: NULL output");
    return clnpu_device_enumerate(NULL, out_infos, out_count);
}

void clnpu_device_list_free(clnpu_device_info *infos)
{
    free(infos);
}
