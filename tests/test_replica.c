/* test_replica.c — replica names and the replica part of job ids (server/replica.c): which
 * names the `replica` option accepts, the message for the others, and which replica an id
 * names (the daemon's 404 for another replica's id; nginx routes by the same prefix). */
#include <string.h>

#include "replica.h"
#include "tap.h"

static int valid(const char *name) {
    char err[256] = "";
    return replica_name_check(name, err, sizeof err) == 0;
}

static const char *owner(const char *id) {
    static char out[REPLICA_NAME_MAX + 1];
    return replica_of_id(id, out, sizeof out) ? out : NULL;
}

int main(void) {
    ok(valid("") && valid("r1") && valid("gpu0") && valid("a-gpu-3") && valid("7"),
       "empty (no replica), letters, digits and inner dashes are names");
    ok(valid("abcdefghijklmnopqrstuvwx") && !valid("abcdefghijklmnopqrstuvwxy"),
       "at most %d characters", REPLICA_NAME_MAX);
    ok(!valid("R1") && !valid("r_1") && !valid("r.1") && !valid("r 1") && !valid("r1/x") &&
       !valid("é"), "upper case, '_', '.', spaces, '/' and non-ASCII are refused");
    ok(!valid("-r1") && !valid("r1-") && !valid("-"), "a leading or trailing '-' is refused");
    char err[256] = "";
    ok(replica_name_check("Bad_Name", err, sizeof err) == -1 && strstr(err, "replica: 'Bad_Name'") &&
       strstr(err, "a-z, 0-9 and '-'"), "the message names the option, the value and the rule: %s", err);

    ok(owner("r1-gen_0123456789abcdef0123") && !strcmp(owner("r1-gen_0123456789abcdef0123"), "r1"),
       "r1-gen_… names r1");
    ok(owner("a-gpu-3-train_00112233445566778899") &&
       !strcmp(owner("a-gpu-3-train_00112233445566778899"), "a-gpu-3"),
       "a name with dashes: everything before the id's last '-'");
    ok(!owner("gen_0123456789abcdef0123") && !owner("load_x"), "an id without a replica names none");
    ok(!owner("-gen_x") && !owner("R1-gen_x") && !owner("r1--gen_x") &&
       !owner("abcdefghijklmnopqrstuvwxy-gen_x"), "an invalid name before the '-' names none");
    char small[3];
    ok(!replica_of_id("r12-gen_x", small, sizeof small), "a name longer than the buffer is not copied");
    return done_testing();
}
