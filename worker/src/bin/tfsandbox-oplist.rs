//! Lists every op registered in the linked libtensorflow, one line each:
//! `name<TAB>stateful|stateless`. The op catalogue's check compares it with the reviewed table.

use prost::Message;
use tfsandbox_scan::tf::OpList;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: TF_GetAllOpList returns a fresh buffer that we own and free below; its data is
    // valid for `length` bytes until then.
    let list = unsafe {
        let buffer = tensorflow_sys::TF_GetAllOpList();
        if buffer.is_null() {
            return Err("TF_GetAllOpList returned nothing".into());
        }
        let bytes = std::slice::from_raw_parts((*buffer).data as *const u8, (*buffer).length);
        let list = OpList::decode(bytes);
        tensorflow_sys::TF_DeleteBuffer(buffer);
        list?
    };
    let mut ops: Vec<_> = list
        .op
        .iter()
        .map(|op| (op.name.as_str(), op.is_stateful))
        .collect();
    ops.sort();
    for (name, stateful) in ops {
        println!(
            "{name}\t{}",
            if stateful { "stateful" } else { "stateless" }
        );
    }
    Ok(())
}
