//! The command line explains itself: every flag and argument of every command has help text, completions come out
//! for every shell clap_complete knows, and the man page renders.

mod common;

use clap::CommandFactory;
use common::*;

#[test]
fn every_flag_and_argument_of_every_command_has_help_text() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() {
                missing.push(format!("{path} {} (the command)", sub.get_name()));
            }
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&scanwatch::cli::Cli::command(), "scanwatch", &mut missing);
    assert!(missing.is_empty(), "no help text: {missing:#?}");
}

#[test]
fn completions_come_out_for_every_shell_and_the_man_page_renders() {
    let sb = Sandbox::new();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let run = sb.run(&["completions", shell]);
        run.expect_code(0);
        for word in ["history", "silence", "tasks", "since"] {
            assert!(run.stdout.contains(word), "{shell} completions lack `{word}`");
        }
    }
    let bad = sb.run(&["completions", "tcsh"]);
    bad.expect_code(2);
    let man = sb.run(&["man"]);
    man.expect_code(0);
    assert!(man.stdout.contains(".TH scanwatch 1") && man.stdout.contains("history"), "{}", &man.stdout[..200]);
}
