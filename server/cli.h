/* cli.h — the sdxld subcommands.  Each takes argv after the subcommand name and returns
 * a process exit status: 0 success, 1 runtime failure (message on stderr), 2 usage. */
#ifndef SD_CLI_H
#define SD_CLI_H

int cli_encode(int argc, char **argv);
int cli_unet(int argc, char **argv);
int cli_vae(int argc, char **argv);
int cli_generate(int argc, char **argv);
int cli_init(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_train_vae(int argc, char **argv);
int cli_train_teacher(int argc, char **argv);
int cli_train(int argc, char **argv);   /* train dmd2 */
int cli_eval_shapes(int argc, char **argv);
int cli_eval_cond(int argc, char **argv);
int cli_convert(int argc, char **argv);
int serve_main(int argc, char **argv);   /* serve.c */

/* serve.c: `sdxld serve`'s options into cfg (defaults < --config file < --flags) and o.
 * -1 to go on, else the exit status (0 after --help or --print-config, 2 a usage error,
 * 78 an invalid configuration), with the message on stderr; never exits the process
 * (tests/fuzz/fuzz_args.c runs it on any argv). */
struct serve_opts {
    const char *config_file;
    const char *single_request;
    int check_config, print_config, help;
};
struct sdxld_config;
int serve_parse_args(int argc, char **argv, struct sdxld_config *cfg, struct serve_opts *o);

#endif
