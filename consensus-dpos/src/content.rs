//! The context-free check of a consortium block's content: what anyone can judge from a header
//! and its items alone. Invalid-block and wrong-verdict evidence rest on it, so it is kept apart
//! from the chain state and must stay a pure function of its inputs.

use medchain_proto::dpos::items_root;
use medchain_proto::v1;

use crate::params::Params;
use crate::Application;

/// Checks what can be checked from a header and its items alone. This is the rule behind
/// invalid-block evidence and wrong-verdict evidence, so it must stay a pure function of its
/// inputs.
pub fn check_content(
    chain_id: &str,
    header: &v1::DposBlockHeader,
    items: &[Vec<u8>],
    params: &Params,
    app: &impl Application,
) -> Result<(), String> {
    if header.chain_id != chain_id {
        return Err(format!(
            "block of chain {:?}, this is {chain_id:?}",
            header.chain_id
        ));
    }
    if items.len() > params.max_block_items {
        return Err(format!(
            "{} items, at most {} per block",
            items.len(),
            params.max_block_items
        ));
    }
    if header.item_count as usize != items.len() {
        return Err(format!(
            "header says {} items, the block has {}",
            header.item_count,
            items.len()
        ));
    }
    if header.items_root != items_root(items).as_bytes() {
        return Err("items root does not match the items".into());
    }
    for (i, item) in items.iter().enumerate() {
        app.validate_item(item)
            .map_err(|e| format!("item {i} is invalid: {e}"))?;
    }
    Ok(())
}
