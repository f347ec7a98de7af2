//! `paiosctl man [--out-dir DIR]`: the man page, generated from the argument tree the
//! binary defines, printed or written as `DIR/paiosctl.1`.

use std::path::Path;

use super::{failure, print, Outcome};

pub fn man(command: clap::Command, out_dir: Option<&Path>) -> Outcome {
    let page = clap_mangen::Man::new(command);
    let mut bytes = Vec::new();
    page.render(&mut bytes)
        .map_err(|e| failure("output", format!("cannot render the man page: {e}")))?;
    match out_dir {
        None => print(&String::from_utf8_lossy(&bytes)),
        Some(dir) => {
            let path = dir.join("paiosctl.1");
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&path, &bytes))
                .map_err(|e| failure("output", format!("cannot write {}: {e}", path.display())))?;
            print(&format!("{}\n", path.display()))
        }
    }
}
