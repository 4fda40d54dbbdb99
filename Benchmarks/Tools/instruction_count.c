// A QEMU TCG plugin that counts the guest instructions a program executes under qemu-user:
//
//   gcc -shared -fPIC -O2 -o libinstruction_count.so instruction_count.c
//   qemu-x86_64 -plugin ./libinstruction_count.so PROGRAM ARGUMENTS…
//
// It prints the total to standard error when the program exits ("instructions: N"). With
// $INSTRUCTION_PROFILE set to a path, it also writes there, for every translated block that
// ran, "address instructions executions", then a line "MAPS" and the program's memory map:
// instruction_profile.py charges those counts to functions (scripts/instruction-profile.sh).
//
// It stands in for `valgrind --tool=callgrind` where valgrind cannot read the program (Debian
// 12's valgrind 3.19 and Swift 6.3's DWARF 5): like callgrind's instruction count, the figure
// depends on the code executed, not on the machine's load. Each translated block counts its
// runs atomically, so the threads of a Swift program are all counted. A block left early by a
// fault or a signal still counts whole.
//
// It declares the few functions of QEMU's plugin API (version 1, QEMU 4.2 to 8.1) it calls, so
// that it builds without QEMU's headers.
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_info_t;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, void (*translated)(qemu_plugin_id_t, struct qemu_plugin_tb *));
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *block, void (*executed)(unsigned int, void *),
                                          enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *block);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *block);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, void (*exiting)(qemu_plugin_id_t, void *), void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/// One translation of a block. A block translated again gets a record of its own; the
/// profile's analysis adds them up by address.
struct block {
    uint64_t address;
    uint64_t instructions;
    uint64_t executions;
    struct block *next;
};

static struct block *blocks;
static pthread_mutex_t blocks_lock = PTHREAD_MUTEX_INITIALIZER;

static void block_executed(unsigned int vcpu, void *record) {
    (void)vcpu;
    __atomic_fetch_add(&((struct block *)record)->executions, 1, __ATOMIC_RELAXED);
}

static void block_translated(qemu_plugin_id_t id, struct qemu_plugin_tb *translated) {
    (void)id;
    struct block *record = calloc(1, sizeof *record);
    if (record == NULL) return;
    record->address = qemu_plugin_tb_vaddr(translated);
    record->instructions = qemu_plugin_tb_n_insns(translated);
    pthread_mutex_lock(&blocks_lock);
    record->next = blocks;
    blocks = record;
    pthread_mutex_unlock(&blocks_lock);
    qemu_plugin_register_vcpu_tb_exec_cb(translated, block_executed, QEMU_PLUGIN_CB_NO_REGS, record);
}

static void write_profile(const char *path) {
    FILE *out = fopen(path, "w");
    if (out == NULL) return;
    for (struct block *record = blocks; record != NULL; record = record->next) {
        uint64_t executions = __atomic_load_n(&record->executions, __ATOMIC_RELAXED);
        if (executions > 0) fprintf(out, "%" PRIx64 " %" PRIu64 " %" PRIu64 "\n", record->address, record->instructions, executions);
    }
    // Under qemu-user with the same architecture, guest addresses are the process's own.
    fprintf(out, "MAPS\n");
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    while (maps != NULL && fgets(line, sizeof line, maps) != NULL) fputs(line, out);
    if (maps != NULL) fclose(maps);
    fclose(out);
}

static void program_exited(qemu_plugin_id_t id, void *userdata) {
    (void)id;
    (void)userdata;
    pthread_mutex_lock(&blocks_lock);
    uint64_t instructions = 0;
    for (struct block *record = blocks; record != NULL; record = record->next) {
        instructions += record->instructions * __atomic_load_n(&record->executions, __ATOMIC_RELAXED);
    }
    fprintf(stderr, "instructions: %" PRIu64 "\n", instructions);
    const char *profile = getenv("INSTRUCTION_PROFILE");
    if (profile != NULL && *profile != '\0') write_profile(profile);
    pthread_mutex_unlock(&blocks_lock);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const struct qemu_info_t *info, int argc,
                                                               char **argv) {
    (void)info;
    (void)argc;
    (void)argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, block_translated);
    qemu_plugin_register_atexit_cb(id, program_exited, NULL);
    return 0;
}
