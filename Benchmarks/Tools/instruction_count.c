// A QEMU TCG plugin that counts the guest instructions a program executes under qemu-user, and
// prints the total to standard error when the program exits:
//
//   gcc -shared -fPIC -O2 -o libinstruction_count.so instruction_count.c
//   qemu-x86_64 -plugin ./libinstruction_count.so PROGRAM ARGUMENTS…
//
// It stands in for `valgrind --tool=callgrind` where valgrind cannot read the program (Debian
// 12's valgrind 3.19 and Swift 6.3's DWARF 5): like callgrind's instruction count, the figure
// depends on the code executed, not on the machine's load. Each translated block adds its
// instruction count when it runs, atomically, so the threads of a Swift program are all
// counted. A block left early by a fault or a signal still counts whole.
//
// It declares the few functions of QEMU's plugin API (version 1, QEMU 4.2 to 8.1) it calls, so
// that it builds without QEMU's headers.
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_info_t;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, void (*translated)(qemu_plugin_id_t, struct qemu_plugin_tb *));
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *block, void (*executed)(unsigned int, void *),
                                          enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *block);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, void (*exiting)(qemu_plugin_id_t, void *), void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

static uint64_t instructions;

static void block_executed(unsigned int vcpu, void *count) {
    (void)vcpu;
    __atomic_fetch_add(&instructions, (uint64_t)(uintptr_t)count, __ATOMIC_RELAXED);
}

static void block_translated(qemu_plugin_id_t id, struct qemu_plugin_tb *block) {
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_cb(block, block_executed, QEMU_PLUGIN_CB_NO_REGS,
                                         (void *)(uintptr_t)qemu_plugin_tb_n_insns(block));
}

static void program_exited(qemu_plugin_id_t id, void *userdata) {
    (void)id;
    (void)userdata;
    fprintf(stderr, "instructions: %" PRIu64 "\n", __atomic_load_n(&instructions, __ATOMIC_RELAXED));
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
