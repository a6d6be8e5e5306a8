/* Devices and target profiles: list every OpenCL device with the profile it binds to, then open
 * device 0 as an emulated NPU (its memory capacity enforced) and give it a tuning database.
 * Usage: devices [PROFILE] (default rebellions-atom). */
#include <stdio.h>

#include "clnpu/clnpu.h"

int main(int argc, char **argv)
{
    const char *target = argc > 1 ? argv[1] : "rebellions-atom";
    int rc = 1;
    clnpu_device_info *infos = NULL;
    clnpu_profile_set *set = NULL;
    clnpu_device *dev = NULL;
    clnpu_buffer *b = NULL;
    clnpu_tuning_db *db = NULL;
    size_t n;
    if (clnpu_device_list(&infos, &n) || clnpu_profile_set_builtin(&set)) goto fail; /* enumerate and query */
    for (size_t i = 0; i < n; i++) {
        clnpu_profile p;
        bool matched;
        if (clnpu_profile_match(set, &infos[i], &p, &matched)) goto fail;
        printf("device %zu: %s (%s), profile %s%s\n", infos[i].index, infos[i].name,
               clnpu_device_type_name(infos[i].type), p.name, matched ? "" : " (no match: generic)");
    }
    const clnpu_profile *npu = clnpu_profile_set_find(set, target);
    if (!npu) {
        fprintf(stderr, "devices: no profile %s\n", target);
        goto done;
    }
    clnpu_device_options opt = clnpu_device_options_default();
    opt.target = target; /* emulate an NPU on this device */
    if (clnpu_device_open(0, &opt, &dev)) goto fail;
    if (clnpu_buffer_create(dev, 1 << 20, &b)) goto fail; /* fails past the profile's memory */
    /* a missing file is an empty database; the device borrows it (destroy it after the device) */
    if (clnpu_tuning_db_load("tuning/pocl-cpu.yaml", &db)) goto fail;
    clnpu_device_set_tuning(dev, db);
    printf("device 0 as %s: %s, %llu MiB usable, %llu B in use\n", clnpu_device_get_profile(dev)->name,
           clnpu_device_is_emulated(dev) ? "emulated" : "native",
           (unsigned long long)(clnpu_device_memory_capacity(dev) >> 20),
           (unsigned long long)clnpu_device_memory_used(dev));
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "devices: %s\n", clnpu_error_message());
done:
    clnpu_buffer_destroy(b);
    clnpu_device_close(dev);
    clnpu_tuning_db_destroy(db);
    clnpu_profile_set_destroy(set);
    clnpu_device_list_free(infos);
    return rc;
}
