/* Lanes of the row and stretch kernels' work-groups, set by their launches (runtime/launch.c,
 * clnpu_lanes_options): a constant, so that the cpu family's one lane walks its row with a unit
 * stride the compiler vectorises even in PoCL's generic work-group function. Without it (a
 * caller's own launch), the work-group's size. */
#ifndef CLNPU_LANES_H
#define CLNPU_LANES_H
#ifndef CLNPU_LANES
#define CLNPU_LANES get_local_size(0)
#endif
#endif
