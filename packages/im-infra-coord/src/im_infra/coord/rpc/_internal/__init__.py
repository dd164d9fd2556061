"""Private helpers of im_infra.coord.rpc."""
