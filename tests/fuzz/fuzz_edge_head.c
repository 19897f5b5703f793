/* fuzz_edge_head.c — libFuzzer harness: any bytes as the start of an HTTP connection through
 * the strict edge's scanner, byte by byte as they could arrive, and the head check on what
 * it accepts (server/edge_head.c: pure, no allocation). */
#include <stdint.h>
#include <string.h>

#include "edge_head.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t pos = 0, head = 0;
    struct edge_verdict v;
    memset(&v, 0, sizeof v);
    enum edge_scan s = EDGE_SCAN_MORE;
    size_t step = size > 0 ? 1 + data[0] % 7 : 1;   /* arrivals of a few bytes at a time */
    for (size_t have = 0; s == EDGE_SCAN_MORE && have < size;) {
        have = have + step < size ? have + step : size;
        s = edge_head_scan((const char *)data, have, &pos, &head, &v);
    }
    if (s == EDGE_SCAN_DONE && head <= size) edge_head_check((const char *)data, head, &v);
    return 0;
}
