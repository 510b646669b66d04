/*
 * insn_count: a qemu-user TCG plugin of llama-wheels that counts the guest's executed instructions, exactly,
 * split into regions the guest marks, and attributes them to the mapped file (and file offset) they run from.
 *
 * Built by benchmarks.counting.qemu_plugin against the qemu-plugin.h of the qemu it builds from Debian's
 * source (build_config/qemu.toml [plugin]); the Python side (benchmarks.counting.insn_count) starts qemu with
 * it and reads its JSON.
 *
 * Counting: every translated block (TB) gets an inline per-vCPU "add N" (N = its instruction count) on one
 * scoreboard counter, run when the block starts executing, and an inline "add 1" on its own slot of a second
 * scoreboard (per-TB execution counts, for the per-file profile). No helper call per block, no sampling:
 * the counts depend only on the guest's control flow. (A block left early by a guest fault is still counted
 * whole; a guest that does not fault is counted exactly.)
 *
 * Regions: the guest calls write(-1, NULL, MAGIC + k) (aarch64 syscall 64; the kernel answers EBADF, nothing
 * is written), which no other code makes. From then on, instructions count to region k (0 <= k < MAX_REGIONS).
 * Instructions before the first marker count to region 0. The syscall callback runs before the syscall, so
 * the `svc` of a marker counts to the region it ends.
 *
 * Files: at translation, the host address of the block's first instruction (qemu_plugin_insn_haddr: in
 * qemu-user, guest memory is host memory at guest_base) is looked up in this process's /proc/self/maps, which
 * shows the guest's mmapped files under their host paths. The table is read again when an address is not in
 * it, and after any mmap/munmap/mremap/mprotect/brk syscall of the guest (a dlclose()d library's range can
 * be reused by another file).
 *
 * Arguments: out=PATH (required): the JSON written at exit (PATH.tmp, then renamed).
 * The JSON names this source's sha256 (compiled in as INSN_COUNT_SOURCE_SHA256), so a reader can refuse
 * the output of any other plugin.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>
#include <qemu-plugin.h>

#ifndef INSN_COUNT_SOURCE_SHA256
#error "compile with -DINSN_COUNT_SOURCE_SHA256=\"<sha256 of this file>\""
#endif

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARKER_MAGIC UINT64_C(0x4c57a000) /* "LW", then the region number in the low bits */
#define MAX_REGIONS 64
#define MAX_SLOTS (1u << 20)              /* distinct (file, offset, length) blocks; 8 MB per vCPU */
#define SYS_WRITE 64                      /* aarch64 Linux syscall numbers */
#define SYS_BRK 214
#define SYS_MUNMAP 215
#define SYS_MREMAP 216
#define SYS_MMAP 222
#define SYS_MPROTECT 226

/* One executable mapping of /proc/self/maps. */
typedef struct {
    uintptr_t start, end;
    uint64_t offset; /* file offset of start */
    int file;        /* index into files */
} Mapping;

/* One distinct translated block: where it is and how many instructions it has. */
typedef struct {
    int file;
    uint64_t offset;
    uint32_t n_insns;
    uint64_t seen; /* its execution count at the previous marker (summed over vCPUs) */
} Slot;

static GMutex lock; /* guards everything below (translation and syscalls may run on several vCPUs) */
static char *out_path;
static struct qemu_plugin_scoreboard *insns_board; /* one uint64_t per vCPU: instructions executed */
static struct qemu_plugin_scoreboard *slots_board; /* MAX_SLOTS uint64_t per vCPU: executions per slot */
static GPtrArray *files;                           /* char *: mapped file paths (or [anon], [unknown]) */
static GHashTable *file_ids;                       /* path -> index + 1 */
static GArray *mappings;                           /* Mapping, sorted by start */
static bool mappings_stale = true;
static GArray *slots;                              /* Slot */
static GHashTable *slot_ids;                       /* "file:offset:n" -> index + 1 */
static uint64_t slot_overflow;                     /* blocks executed that had no slot left (must be 0) */
static int region;                                 /* the current region */
static uint64_t region_insns[MAX_REGIONS];
static uint64_t region_markers[MAX_REGIONS];
static uint64_t insns_at_marker;                   /* total at the previous marker */
static GHashTable *profile[MAX_REGIONS];           /* slot index + 1 -> executions in that region */
static unsigned int max_vcpu;
static uint64_t foreign_writes_to_minus_one;       /* write(-1, ...) calls that were not markers */

static int file_id(const char *path)
{
    gpointer found = g_hash_table_lookup(file_ids, path);
    if (found) {
        return GPOINTER_TO_INT(found) - 1;
    }
    g_ptr_array_add(files, g_strdup(path));
    g_hash_table_insert(file_ids, g_strdup(path), GINT_TO_POINTER(files->len));
    return files->len - 1;
}

/* Re-read this process's executable mappings. */
static void read_mappings(void)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    g_array_set_size(mappings, 0);
    if (!maps) {
        return;
    }
    while (fgets(line, sizeof line, maps)) {
        unsigned long start, end;
        unsigned long long offset;
        char perms[8];
        int path_at = 0;
        if (sscanf(line, "%lx-%lx %7s %llx %*s %*s %n", &start, &end, perms, &offset, &path_at) < 4) {
            continue;
        }
        /* qemu maps guest code readable (and not host-executable): keep every readable mapping */
        if (perms[0] != 'r') {
            continue;
        }
        char *path = path_at ? line + path_at : line + strlen(line);
        path[strcspn(path, "\n")] = '\0';
        Mapping m = {start, end, offset, file_id(*path ? path : "[anon]")};
        g_array_append_val(mappings, m);
    }
    fclose(maps);
    mappings_stale = false;
}

static const Mapping *find_mapping(uintptr_t addr)
{
    guint lo = 0, hi = mappings->len;
    while (lo < hi) {
        guint mid = (lo + hi) / 2;
        const Mapping *m = &g_array_index(mappings, Mapping, mid);
        if (addr < m->start) {
            hi = mid;
        } else if (addr >= m->end) {
            lo = mid + 1;
        } else {
            return m;
        }
    }
    return NULL;
}

/* The slot of a block at (file, offset) with n instructions, or -1 when all slots are taken. */
static int slot_for(int file, uint64_t offset, uint32_t n)
{
    char key[64];
    snprintf(key, sizeof key, "%d:%" PRIx64 ":%u", file, offset, n);
    gpointer found = g_hash_table_lookup(slot_ids, key);
    if (found) {
        return GPOINTER_TO_INT(found) - 1;
    }
    if (slots->len >= MAX_SLOTS) {
        return -1;
    }
    Slot s = {file, offset, n, 0};
    g_array_append_val(slots, s);
    g_hash_table_insert(slot_ids, g_strdup(key), GINT_TO_POINTER(slots->len));
    return slots->len - 1;
}

static void vcpu_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_u64 insns = {insns_board, 0};
    qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(tb, QEMU_PLUGIN_INLINE_ADD_U64, insns, n);

    uintptr_t haddr = (uintptr_t)qemu_plugin_insn_haddr(qemu_plugin_tb_get_insn(tb, 0));
    g_mutex_lock(&lock);
    if (mappings_stale) {
        read_mappings();
    }
    const Mapping *m = find_mapping(haddr);
    if (!m) {
        read_mappings(); /* mapped since the last read */
        m = find_mapping(haddr);
    }
    int file = m ? m->file : file_id("[unknown]");
    uint64_t offset = m ? m->offset + (haddr - m->start) : qemu_plugin_tb_vaddr(tb);
    int slot = slot_for(file, offset, (uint32_t)n);
    g_mutex_unlock(&lock);
    if (slot >= 0) {
        qemu_plugin_u64 count = {slots_board, (size_t)slot * sizeof(uint64_t)};
        qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(tb, QEMU_PLUGIN_INLINE_ADD_U64, count, 1);
    } else {
        qemu_plugin_u64 lost = {insns_board, sizeof(uint64_t)}; /* second word: overflowed blocks */
        qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(tb, QEMU_PLUGIN_INLINE_ADD_U64, lost, 1);
    }
}

static uint64_t sum_u64(struct qemu_plugin_scoreboard *board, size_t offset)
{
    uint64_t total = 0;
    for (unsigned int v = 0; v <= max_vcpu; v++) {
        total += *(uint64_t *)((char *)qemu_plugin_scoreboard_find(board, v) + offset);
    }
    return total;
}

/* Close the current region: its instruction total and the executions of each block since the last marker. */
static void close_region(void)
{
    uint64_t now = sum_u64(insns_board, 0);
    region_insns[region] += now - insns_at_marker;
    insns_at_marker = now;
    for (guint i = 0; i < slots->len; i++) {
        Slot *s = &g_array_index(slots, Slot, i);
        uint64_t seen = sum_u64(slots_board, (size_t)i * sizeof(uint64_t));
        if (seen != s->seen) {
            gpointer key = GUINT_TO_POINTER(i + 1);
            uint64_t *runs = g_hash_table_lookup(profile[region], key);
            if (!runs) {
                runs = g_new0(uint64_t, 1);
                g_hash_table_insert(profile[region], key, runs);
            }
            *runs += seen - s->seen;
            s->seen = seen;
        }
    }
}

static void vcpu_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                         uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    g_mutex_lock(&lock);
    if (num == SYS_WRITE && a1 == UINT64_MAX) {
        if (a2 == 0 && a3 >= MARKER_MAGIC && a3 < MARKER_MAGIC + MAX_REGIONS) {
            close_region();
            region = (int)(a3 - MARKER_MAGIC);
            region_markers[region]++;
        } else {
            foreign_writes_to_minus_one++;
        }
    } else if (num == SYS_MMAP || num == SYS_MUNMAP || num == SYS_MREMAP || num == SYS_MPROTECT ||
               num == SYS_BRK) {
        mappings_stale = true;
    }
    g_mutex_unlock(&lock);
}

static void vcpu_init(qemu_plugin_id_t id, unsigned int vcpu)
{
    g_mutex_lock(&lock);
    if (vcpu > max_vcpu) {
        max_vcpu = vcpu;
    }
    g_mutex_unlock(&lock);
}

static void json_string(GString *out, const char *s)
{
    g_string_append_c(out, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            g_string_append_printf(out, "\\%c", c);
        } else if (c < 0x20) {
            g_string_append_printf(out, "\\u%04x", c);
        } else {
            g_string_append_c(out, c);
        }
    }
    g_string_append_c(out, '"');
}

static void plugin_exit(qemu_plugin_id_t id, void *userdata)
{
    g_mutex_lock(&lock);
    close_region();
    slot_overflow = sum_u64(insns_board, sizeof(uint64_t));
    GString *out = g_string_new("{\n");
    g_string_append_printf(out, "\"tool\": \"llama-wheels insn_count\",\n\"source_sha256\": \"%s\",\n",
                           INSN_COUNT_SOURCE_SHA256);
    g_string_append_printf(out, "\"marker_magic\": %" PRIu64 ",\n\"vcpus\": %u,\n", MARKER_MAGIC, max_vcpu + 1);
    g_string_append_printf(out, "\"total\": %" PRIu64 ",\n\"slot_overflow\": %" PRIu64 ",\n",
                           insns_at_marker, slot_overflow);
    g_string_append_printf(out, "\"foreign_writes_to_minus_one\": %" PRIu64 ",\n", foreign_writes_to_minus_one);
    g_string_append(out, "\"regions\": {");
    bool first = true;
    for (int r = 0; r < MAX_REGIONS; r++) {
        if (region_insns[r] || region_markers[r]) {
            g_string_append_printf(out, "%s\n  \"%d\": {\"insns\": %" PRIu64 ", \"markers\": %" PRIu64 "}",
                                   first ? "" : ",", r, region_insns[r], region_markers[r]);
            first = false;
        }
    }
    g_string_append(out, "\n},\n\"files\": [");
    for (guint i = 0; i < files->len; i++) {
        g_string_append(out, i ? ",\n  " : "\n  ");
        json_string(out, g_ptr_array_index(files, i));
    }
    /* profile: [region, file, offset, instructions] per block that ran in that region */
    g_string_append(out, "\n],\n\"profile\": [");
    first = true;
    for (int r = 0; r < MAX_REGIONS; r++) {
        GHashTableIter it;
        gpointer key, value;
        g_hash_table_iter_init(&it, profile[r]);
        while (g_hash_table_iter_next(&it, &key, &value)) {
            const Slot *s = &g_array_index(slots, Slot, GPOINTER_TO_UINT(key) - 1);
            g_string_append_printf(out, "%s\n  [%d, %d, %" PRIu64 ", %" PRIu64 "]", first ? "" : ",", r, s->file,
                                   s->offset, *(uint64_t *)value * s->n_insns);
            first = false;
        }
    }
    g_string_append(out, "\n]\n}\n");
    g_mutex_unlock(&lock);

    char *tmp = g_strdup_printf("%s.tmp", out_path);
    GError *error = NULL;
    if (!g_file_set_contents(tmp, out->str, out->len, &error) || rename(tmp, out_path) != 0) {
        fprintf(stderr, "insn_count: cannot write %s: %s\n", out_path, error ? error->message : strerror(errno));
    }
    g_free(tmp);
    g_string_free(out, TRUE);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (g_str_has_prefix(argv[i], "out=")) {
            out_path = g_strdup(argv[i] + 4);
        } else {
            fprintf(stderr, "insn_count: unknown argument %s (the only one is out=PATH)\n", argv[i]);
            return -1;
        }
    }
    if (!out_path || !*out_path) {
        fprintf(stderr, "insn_count: missing out=PATH (where the JSON goes)\n");
        return -1;
    }
    if (info->system_emulation || strcmp(info->target_name, "aarch64") != 0) {
        fprintf(stderr, "insn_count: runs only in qemu-aarch64 user mode, not %s\n", info->target_name);
        return -1;
    }
    insns_board = qemu_plugin_scoreboard_new(2 * sizeof(uint64_t));
    slots_board = qemu_plugin_scoreboard_new(MAX_SLOTS * sizeof(uint64_t));
    files = g_ptr_array_new();
    file_ids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    mappings = g_array_new(FALSE, FALSE, sizeof(Mapping));
    slots = g_array_new(FALSE, FALSE, sizeof(Slot));
    slot_ids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    for (int r = 0; r < MAX_REGIONS; r++) {
        profile[r] = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
    }
    qemu_plugin_register_vcpu_init_cb(id, vcpu_init);
    qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, vcpu_syscall);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}
